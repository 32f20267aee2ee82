"""First contact with the ``redis-ckpt`` console script, run as a user runs it: the installed
script in a subprocess, against real servers from the fixtures (issue #14, #11.15)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
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


# --------------------------------------------------------------------------- 2. redis-ckpt server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def read_line_with(proc: subprocess.Popen[str], needle: str, limit_s: float = 60) -> str:
    """The first line of ``proc``'s stdout that contains ``needle`` (fails if it never comes)."""
    deadline = time.monotonic() + limit_s
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line
    raise AssertionError(f"{needle!r} never printed; got {seen!r}, stderr {proc.stderr.read()!r}")  # type: ignore[union-attr]


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.server
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_server_runs_a_durable_valkey_until_a_signal_and_leaves_nothing_behind(tmp_path: Path, sig: int) -> None:
    if not SCRIPT.exists():
        pytest.skip("console script not installed")
    port = free_port()
    data = tmp_path / "data"
    url = f"redis://127.0.0.1:{port}/0"
    args = [str(SCRIPT), "server", "--port", str(port), "--data-dir", str(data)]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert url in read_line_with(proc, url)
            [child] = children(proc.pid)
            assert "valkey-server" in Path(f"/proc/{child}/cmdline").read_text()
            # the server is one the store accepts, and a commit lands in the data dir's AOF
            assert cli(["check", "--url", url]).returncode == 0
            with CheckpointStore.from_url(url, namespace="default") as store:
                with store.acquire("job", owner="w", ttl=10) as lease:
                    lease.commit({"kept": True})
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == 0
            assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not Path(f"/proc/{child}").exists(), "the valkey-server child outlived the CLI"
    assert port_is_free(port)
    # the data dir is kept: the same command brings the commit back
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            read_line_with(proc, url)
            with CheckpointStore.from_url(url, namespace="default") as store:
                assert store.load("job").state == {"kept": True}
        finally:
            proc.terminate()
            assert proc.wait(timeout=60) == 0


@pytest.mark.server
def test_server_on_a_port_in_use_is_one_line_exit_2(durable_server: Any, tmp_path: Path) -> None:
    proc = cli(["server", "--port", str(durable_server.port), "--data-dir", str(tmp_path / "d")])
    assert proc.returncode == 2
    [line] = error_lines(proc)
    assert "already in use" in line and "--port" in line
