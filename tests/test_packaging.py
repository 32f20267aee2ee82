"""The wheel ships the Lua scripts and works from a fresh virtualenv; the demo runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from redis_ckpt.drivers.scripts import SCRIPT_NAMES, lua_text

ROOT = Path(__file__).resolve().parent.parent


def test_every_script_has_a_header_naming_keys_argv_and_return():
    for name in SCRIPT_NAMES:
        head = lua_text(name).split("\nlocal ", 1)[0]
        assert head.startswith(f"-- {name}:"), name
        for word in ("KEYS[1]", "ARGV[1]", "Returns"):
            assert word in head, f"{name}.lua header lacks {word}"
    assert {p.stem for p in (ROOT / "lua").glob("*.lua")} == set(SCRIPT_NAMES)


def test_a_checkout_loads_the_scripts_as_the_wheel_does():
    """One way to load: the package's redis_ckpt/lua (importlib.resources). In a checkout or an
    editable install that is the symlink to the top-level lua/ (the wheel test below loads the
    same names from the installed package)."""
    from importlib import resources

    import redis_ckpt

    packaged = resources.files("redis_ckpt").joinpath("lua")
    assert Path(redis_ckpt.__file__).resolve().parent == ROOT / "redis_ckpt"
    assert Path(str(packaged)).resolve() == (ROOT / "lua").resolve()
    assert (ROOT / "redis_ckpt" / "lua").is_symlink()
    for name in SCRIPT_NAMES:
        text = (ROOT / "lua" / f"{name}.lua").read_text(encoding="utf-8")
        for part in re.findall(r"^-- include: (\w+)$", text, re.MULTILINE):
            text = text.replace(f"-- include: {part}\n", (ROOT / "lua" / "parts" / f"{part}.lua").read_text(encoding="utf-8"))
        assert lua_text(name) == text
        assert not re.search(r"^-- include:", lua_text(name), re.MULTILINE)


@pytest.mark.parametrize("part, names, defines", [
    ("run_keys", ("delete", "prune"), "local function delete_run_keys"),
    ("shape", ("saver_read", "saver_admin"), "local function shape_of"),
])
def test_code_two_scripts_share_is_written_once_and_included_whole(part, names, defines):
    text = (ROOT / "lua" / "parts" / f"{part}.lua").read_text(encoding="utf-8")
    for name in names:
        assert text in lua_text(name)
        assert defines not in (ROOT / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@pytest.mark.server
@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_commits(tmp_path, make_server):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("redis_ckpt-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert {f"redis_ckpt/lua/{n}.lua" for n in SCRIPT_NAMES} <= set(names)
    assert {"redis_ckpt/lua/parts/run_keys.lua", "redis_ckpt/lua/parts/shape.lua"} <= set(names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True)
    server = make_server("valkey")
    script = textwrap.dedent(f"""
        import redis_ckpt, redis_ckpt.drivers.scripts as s
        assert redis_ckpt.__file__.startswith({str(venv)!r}), redis_ckpt.__file__
        from importlib import resources
        assert resources.files("redis_ckpt").joinpath("lua", "commit.lua").is_file()
        assert s.lua_text("commit") == {(ROOT / "lua" / "commit.lua").read_text(encoding="utf-8")!r}
        assert s.lua_text("delete") == {lua_text("delete")!r}
        store = redis_ckpt.CheckpointStore.from_url({server.url!r}, namespace="wheel")
        with store.acquire("w", owner="venv", ttl=5) as lease:
            assert lease.commit({{"from": "wheel"}}) == 1
        assert store.load("w").state == {{"from": "wheel"}}
        print("ok")
    """)
    out = subprocess.run([str(py), "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.server
@pytest.mark.slow
def test_the_main_job_runs_on_an_embedded_server(tmp_path):
    out = subprocess.run([sys.executable, "-m", "redis_ckpt", "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "took over the run with fencing token 2" in out.stdout
    assert "REJECTED: token 2 < fence 3" in out.stdout
    assert "demo OK" in out.stdout
