"""The layers hold: the sans-IO core imports no I/O library (no redis, no tenacity, no
asyncio, no socket), and no module of the package imports itself back through others."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import redis_ckpt

PACKAGE = Path(redis_ckpt.__file__).parent

CORE_ONLY = r"""
import importlib, pkgutil, sys, types
from importlib.abc import MetaPathFinder

BLOCKED = ("redis", "tenacity", "asyncio", "socket")

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the core imported {name}")
        return None

for name in BLOCKED:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, Block())
# the package's own __init__ (the public face) imports the shells: stand in for it
pkg = types.ModuleType("redis_ckpt")
pkg.__path__ = [PACKAGE]
sys.modules["redis_ckpt"] = pkg
importlib.import_module("redis_ckpt.errors")
importlib.import_module("redis_ckpt.models")
core = importlib.import_module("redis_ckpt.core")
names = [m.name for m in pkgutil.walk_packages(core.__path__, "redis_ckpt.core.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
assert not leaked, leaked
print(len(names))
"""


def test_the_core_imports_no_io_library():
    code = f"PACKAGE = {str(PACKAGE)!r}\n" + CORE_ONLY
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 15  # every core module was imported (flows included)


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports at module level (a function's lazy import too)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            out |= {n for n in [target, *names] if n.startswith("redis_ckpt")}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("redis_ckpt")}
    return out


def _graph(paths: list[Path]) -> dict[str, set[str]]:
    modules = {}
    for p in paths:
        name = ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = p
    return {m: {t for t in _imports(p) if t in modules and t != m} for m, p in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_core_and_drivers_have_no_import_cycle():
    """Package __init__ modules aside (a package's face may gather its parts)."""
    paths = [p for sub in ("core", "drivers") for p in (PACKAGE / sub).rglob("*.py") if p.name != "__init__.py"]
    assert _cycle(_graph(paths)) is None


def test_the_package_has_no_import_cycle():
    """No module of redis_ckpt imports itself back through others, lazy imports included
    (package __init__ modules aside, as above)."""
    paths = [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]
    assert _cycle(_graph(paths)) is None


def test_no_module_is_over_about_400_lines():
    """Issue 17: a module is one concern a reader takes in at once (~400 lines; 420 at most)."""
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 420} == {}
