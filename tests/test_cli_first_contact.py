"""First contact with the ``redis-ckpt`` console script, run as a user runs it: the installed
script in a subprocess, against real servers from the fixtures (issue #14, #11.15)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from redis_ckpt import CheckpointStore


SCRIPT = Path(sys.executable).with_name("redis-ckpt")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script; never a traceback, whatever happens."""
    if not SCRIPT.exists():
        if in_ci():
            pytest.fail(f"the console script is not installed next to {sys.executable}")
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    base = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_CKPT_")}
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})}, input=input, check=False)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


# --------------------------------------------------------------------------- 1. no hangs


@pytest.mark.server
def test_every_command_ends_within_its_timeout_on_a_frozen_server(make_server: Any, tmp_path: Path) -> None:
    server = make_server("valkey")
    store = CheckpointStore.from_url(server.url, namespace="default")
    with store.acquire("r", owner="w", ttl=30) as lease:
        lease.commit({"x": 1})
    frame = tmp_path / "r.rckp"
    frame.write_bytes(store.export_frame("r"))
    store.close()
    os.kill(server.pid, signal.SIGSTOP)  # frozen: it accepts connections and never answers
    try:
        # the health-probe form first, with its default timeout
        proc = cli(["check", "--url", server.url], timeout=60)
        assert proc.returncode == 2, proc.stderr
        [line] = error_lines(proc)
        assert "did not answer within 5 s" in line
        for args in (["check"], ["runs"], ["show", "r"], ["fence", "r"], ["fence", "r", "--follow"],
                     ["verify", "--all"], ["verify", "r"], ["revoke", "r", "--yes"], ["delete", "r", "--yes"],
                     ["export", "r", "-o", str(tmp_path / "x.rckp")], ["import", str(frame)]):
            proc = cli([*args, "--url", server.url, "--timeout", "1"], timeout=60)
            assert proc.returncode == 2, (args, proc.stderr)
            assert error_lines(proc) == [f"error: {server.url} did not answer within 1 s "
                                         "(is it stopped, overloaded or unreachable?)"], args
            assert proc.stdout == ""
    finally:
        os.kill(server.pid, signal.SIGCONT)


def test_a_timeout_must_be_positive_and_fit_the_live_check() -> None:
    assert cli(["runs", "--timeout", "0"]).returncode == 2
    proc = cli(["check", "--timeout", "2", "--timeout-ms", "5000"])
    assert proc.returncode == 2 and "--timeout-ms" in proc.stderr


@pytest.mark.server
def test_check_server_on_a_frozen_server_raises_instead_of_hanging(make_server: Any) -> None:
    from redis_ckpt import StoreUnavailableError, check_server

    server = make_server("valkey")
    os.kill(server.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailableError) as unavailable:
            check_server(server.url, timeout=0.5)
        assert "Timeout" in str(unavailable.value)
    finally:
        os.kill(server.pid, signal.SIGCONT)
