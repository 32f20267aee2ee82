"""examples/*.py as a user runs them: the URL they are given (which may hold a password)
reaches their worker processes without showing on any command line. (Each example's story
itself: test_steps.py and test_langgraph.py.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SECRET = "s3cret-pw"
URL = f"redis://:{SECRET}@127.0.0.1:1/0"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Spawned:
    """Stands in for subprocess.Popen: records what a worker would be started with."""

    calls: list[tuple[list[str], dict[str, Any]]] = []

    def __init__(self, args: list[str], **kw: Any) -> None:
        Spawned.calls.append((list(args), kw))
        self.stdin = self.stdout = None


START_A_WORKER = {
    "steps_resume": lambda m: m.spawn("worker-1", URL, "ns", "run-1"),
    "langgraph_resume": lambda m: m.Worker("A", URL, "ns", "thread-1", "start"),
}


@pytest.mark.parametrize("example", sorted(START_A_WORKER))
def test_a_worker_gets_the_url_through_its_environment_not_its_command_line(example: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Any local user can read a command line (``ps``): a user who set REDIS_CKPT_URL to keep
    the password out of it must not find it on the workers' (the demo's own workers: same)."""
    module = load(example)
    Spawned.calls = []
    monkeypatch.setattr(subprocess, "Popen", Spawned)
    START_A_WORKER[example](module)
    [(argv, kw)] = Spawned.calls
    assert not any(SECRET in arg for arg in argv), argv
    assert kw["env"]["REDIS_CKPT_URL"] == URL


@pytest.mark.server
def test_the_steps_example_runs_on_a_server_with_a_password_given_in_the_environment(make_server: Any) -> None:
    server = make_server("valkey", password=SECRET)
    env = {**os.environ, "REDIS_CKPT_URL": server.url}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "steps_resume.py")], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout and SECRET not in proc.stdout + proc.stderr


BAD_URLS = {  # what the URL is -> what the one error line says
    "malformed": (f"redis://:{SECRET}@127.0.0.1:abc/0", "bad --url"),
    "no-scheme": (f"http://:{SECRET}@127.0.0.1:6379/0", "bad --url"),
    "closed-port": (URL, "cannot reach"),
}


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The error a first-time user gets: exit 2, stderr one ``error: ...`` line (indented
    detail lines aside), no traceback, no password anywhere; that line."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and SECRET not in out, out
    headlines = [line for line in proc.stderr.splitlines() if line and not line.startswith("  ")]
    assert len(headlines) == 1 and headlines[0].startswith("error: "), out
    assert "worker" not in proc.stdout, out  # none was started
    return headlines[0]


def run_example(example: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / f"{example}.py")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "REDIS_CKPT_URL": url}, check=False)


@pytest.mark.parametrize("bad", sorted(BAD_URLS))
@pytest.mark.parametrize("example", sorted(START_A_WORKER))
def test_an_example_given_a_bad_url_says_so_in_one_line(example: str, bad: str) -> None:
    url, says = BAD_URLS[bad]
    line = one_error(run_example(example, url))
    assert says in line and "127.0.0.1" in line, line


@pytest.mark.server
@pytest.mark.parametrize("example", sorted(START_A_WORKER))
def test_an_example_on_a_server_that_is_refused_or_refuses_it_says_so_in_one_line(example: str,
                                                                                   make_server: Any) -> None:
    """A server that cannot keep a commit durable (the store refuses it), and one that
    refuses the password: one line each, naming the server (without its password)."""
    lax = make_server("valkey", password=SECRET, appendonly="no")
    line = one_error(run_example(example, lax.url))
    assert "refusing to use" in line and f":{lax.port}" in line, line
    locked = make_server("valkey", password="other-pw")
    line = one_error(run_example(example, f"redis://:{SECRET}@127.0.0.1:{locked.port}/0"))
    assert "authentication failed" in line and f":{locked.port}" in line, line
