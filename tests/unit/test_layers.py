"""The layers hold: the sans-IO core imports no I/O library (no redis, no tenacity, no
asyncio, no socket)."""

from __future__ import annotations

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
