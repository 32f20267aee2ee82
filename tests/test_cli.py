"""The ``redis-ckpt`` admin CLI, driven through click's CliRunner (and real subprocesses)
against real servers: output, --json keys, exit codes, confirmations, redaction."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from redis_ckpt import CheckpointStore, FencedError
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.cli import cli, main
from redis_ckpt.cli import render

PASSWORD = "s3cret"


# --------------------------------------------------------------------------- helpers


def invoke(args: list[str], *, url: str | None = None, namespace: str | None = None,
           input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run one command; connection options go after the command's own arguments."""
    extra: list[str] = []
    if url is not None:
        extra += ["--url", url]
    if namespace is not None:
        extra += ["--namespace", namespace]
    runner = CliRunner()
    result = runner.invoke(cli, [*args, *extra], input=input, env=env, catch_exceptions=True)
    result.args_seen = [*args, *extra]  # type: ignore[attr-defined]
    # never a traceback: every failure is a clean exit with a message
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def as_json(result: Result) -> dict[str, Any]:
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def error_lines(result: Result) -> list[str]:
    """The ``error: ...`` lines on stderr; with --json an error is one JSON object, read back
    into the same form."""
    lines = []
    for line in result.stderr.splitlines():
        if line.startswith("error: "):
            lines.append(line)
        elif line.startswith("{") and "--json" in result.args_seen:  # type: ignore[attr-defined]
            err = json.loads(line)
            assert set(err) == {"error", "exit_code"} and err["exit_code"] == result.exit_code
            lines.append(f"error: {err['error']}")
    return lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def zombie_scenario(store: CheckpointStore, run: str) -> None:
    """A worker whose lease expired commits after a fresh worker took over: rejected."""
    zombie = store.acquire(run, owner="zombie", ttl=0.2)
    zombie.commit({"step": 1})
    time.sleep(0.35)
    fresh = store.acquire(run, owner="fresh", ttl=30)
    fresh.commit({"step": 2})
    with pytest.raises(FencedError):
        zombie.commit({"step": 99})
    assert zombie.token == 1 and fresh.token == 2


RUN_KEYS = {"run", "generation", "fence", "kept", "head", "lease"}
HEAD_KEYS = {"generation", "token", "owner", "commit_id", "checksum", "size", "schema_version", "codec",
             "created_at", "age_ms"}
LEASE_KEYS = {"state", "owner", "token", "ms_left", "expires_at"}
GENERATION_KEYS = {"generation", "ok", "reason", "detail", "size", "token", "owner", "created_at",
                   "schema_version", "checksum", "compression", "metadata"}
EVENT_KEYS = {"id", "kind", "at", "fields"}
REJECTED_KEYS = {"id", "at", "owner", "token", "fence", "expected", "commit_id"}


def is_iso_utc(value: str) -> bool:
    return len(value) == 24 and value.endswith("Z") and value[10] == "T"


# --------------------------------------------------------------------------- no server needed


def test_help_lists_every_command() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    for name in ("check", "runs", "show", "fence", "verify", "revoke", "delete", "export", "import", "demo"):
        assert name in result.stdout
        sub = invoke([name, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.stdout
        if name != "demo":
            assert "--url" in sub.stdout and "--namespace" in sub.stdout and "--json" in sub.stdout
    assert "--max-seconds" not in invoke(["fence", "--help"]).stdout  # hidden (tests only)


@pytest.mark.parametrize("url", [
    f"foo://:{PASSWORD}@127.0.0.1:6379/0",
    f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
    f"redis://user:{PASSWORD}@127.0.0.1:6379/0?db=x",
])
def test_a_bad_url_is_one_line_exit_2_without_the_password(url: str) -> None:
    for args in (["runs"], ["check"], ["show", "r"]):
        result = invoke(args, url=url)
        assert result.exit_code == 2, result.output
        assert PASSWORD not in result.output
        assert len(error_lines(result)) == 1 and "bad --url" in result.stderr


def test_invalid_run_id_is_exit_2_before_connecting() -> None:
    # nothing listens on the URL: the run id is refused first
    result = invoke(["show", "a{b"], url=f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 2
    assert error_lines(result) == ["error: run id 'a{b' must not contain '{' or '}' (they pick the hash slot)"]


def test_invalid_namespace_is_exit_2() -> None:
    result = invoke(["runs"], url=f"redis://127.0.0.1:{free_port()}/0", namespace="a:b")
    assert result.exit_code == 2 and "namespace" in result.stderr


def test_usage_errors_are_exit_2() -> None:
    assert invoke(["verify"]).exit_code == 2
    assert invoke(["verify", "r", "--all"]).exit_code == 2
    assert invoke(["export", "r", "-o", "-", "--json"]).exit_code == 2
    assert invoke(["check", "--replica-fsync"]).exit_code == 2
    assert invoke(["check", "--declare", "appendfsync"]).exit_code == 2
    assert invoke(["check", "--declare", "maxmemory=1gb"]).exit_code == 2
    assert invoke(["runs", "--sort", "size"]).exit_code == 2


def test_nothing_listening_is_exit_2_for_every_command(tmp_path: Path) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    frame = tmp_path / "f.rckp"
    frame.write_bytes(b"RCKP")
    for args in (["check"], ["runs"], ["show", "r"], ["fence", "r"], ["verify", "--all"],
                 ["revoke", "r", "--yes"], ["delete", "r", "--yes"], ["export", "r", "-o", str(tmp_path / "x")]):
        result = invoke(args, url=url)
        assert result.exit_code == 2, (args, result.output)
        assert len(error_lines(result)) == 1 and "127.0.0.1" in result.stderr, result.stderr
        assert PASSWORD not in result.output
        assert result.stdout == ""


def test_url_and_namespace_come_from_the_environment() -> None:
    port = free_port()
    result = invoke(["runs"], env={"REDIS_CKPT_URL": f"redis://127.0.0.1:{port}/0", "REDIS_CKPT_NAMESPACE": "a:b"})
    assert result.exit_code == 2 and "namespace 'a:b'" in result.stderr
    result = invoke(["runs"], env={"REDIS_CKPT_URL": f"redis://127.0.0.1:{port}/0"})
    assert result.exit_code == 2 and f"127.0.0.1:{port}" in result.stderr


def test_render_helpers() -> None:
    assert render.duration(850) == "850ms"
    assert render.duration(12_345) == "12.3s"
    assert render.duration(245_000) == "4m05s"
    assert render.duration(3 * 3600_000 + 60_000) == "3h01m"
    assert render.duration(2 * 86_400_000 + 3600_000) == "2d01h"
    assert render.size(100) == "100 B" and render.size(2048) == "2.0 KiB"
    from datetime import datetime, timezone

    assert render.iso(datetime(2026, 5, 25, 12, 0, 0, 123456, tzinfo=timezone.utc)) == "2026-05-25T12:00:00.123Z"
    assert render.table(["A", "BB"], [["xyz", None], [1, "long text"]]).splitlines() == [
        "A    BB", "xyz  -", "1    long text"]
    assert render.jsonable({1: b"\x00", "s": {3, 1}, "t": (1, 2)}) == {"1": {"base64": "AA=="}, "s": [1, 3],
                                                                      "t": [1, 2]}


# --------------------------------------------------------------------------- check


@pytest.mark.server
@pytest.mark.parametrize("timeout, expected_ms", [(3600, 5000), (20, 5000), (5, 4000), (2, 1000), (0.5, 250)])
def test_check_waits_as_documented_without_timeout_ms(durable_server: Any, namespace: str, timeout: float,
                                                       expected_ms: int) -> None:
    """--timeout less 1 s, at least half of it, at most 5000 (check --help, the README): never
    30 minutes for --timeout 3600, and always less than --timeout."""
    data = as_json(invoke(["check", "--json", "--timeout", str(timeout)], url=durable_server.url, namespace=namespace))
    assert data["policy"]["timeout_ms"] == expected_ms < timeout * 1000


@pytest.fixture(scope="module")
def refused_server(make_module_server: Any) -> Any:
    """Valkey with appendfsync everysec: WAITAOF confirms before the fsync, so it is refused."""
    return make_module_server("valkey", appendfsync="everysec")


@pytest.mark.server
def test_check_accepts_a_durable_server(durable_server: Any, namespace: str) -> None:
    result = invoke(["check"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 0, result.output
    assert "verdict" in result.stdout and "durable" in result.stdout
    assert "live-waitaof" in result.stdout
    data = as_json(invoke(["check", "--json"], url=durable_server.url, namespace=namespace))
    assert set(data) == {"server", "namespace", "policy", "declared", "verdict", "exit_code", "topology", "nodes"}
    assert data["verdict"] == "durable" and data["exit_code"] == 0 and data["topology"] == []  # one server
    assert data["policy"] == {"label": "local-fsync", "replicas": 0, "replica_fsync": False, "timeout_ms": 4000}
    [node] = data["nodes"]
    assert set(node) == {"server", "engine", "version", "verdict", "findings"}
    assert node["engine"] == durable_server.engine and node["version"] == durable_server.version
    for f in node["findings"]:
        assert set(f) == {"check", "level", "message", "remedy"}
        assert f["level"] in ("ok", "warn")


@pytest.mark.server
def test_check_refuses_a_server_against_the_policy(durable_server: Any, namespace: str) -> None:
    result = invoke(["check", "--replicas", "1", "--json"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 1
    data = as_json(result)
    assert data["verdict"] == "refused" and data["policy"]["replicas"] == 1
    [replicas] = [f for f in data["nodes"][0]["findings"] if f["check"] == "replicas"]
    assert replicas["level"] == "refuse" and replicas["remedy"]
    assert error_lines(result) == [f"error: {data['server']} is refused: replicas (refuse)"]


@pytest.mark.server
def test_check_on_a_refused_server_is_exit_1_with_remedies(refused_server: Any) -> None:
    result = invoke(["check"], url=refused_server.url)
    assert result.exit_code == 1
    line = next(li for li in result.stdout.splitlines() if "appendfsync everysec" in li)
    assert line.split()[:2] == ["refuse", "appendfsync"]
    assert "remedy: set `appendfsync always`" in result.stdout
    assert "REFUSED" in result.stdout
    assert error_lines(result) == [f"error: {refused_server.url} is refused: appendfsync (refuse)"]
    data = as_json(invoke(["check", "--json"], url=refused_server.url))
    assert data["verdict"] == "refused" and data["exit_code"] == 1
    levels = {f["check"]: f["level"] for f in data["nodes"][0]["findings"]}
    assert levels["appendfsync"] == "refuse"


@pytest.mark.server
def test_a_store_command_on_a_refused_server_lists_the_problems(refused_server: Any) -> None:
    result = invoke(["runs"], url=refused_server.url)
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: refusing to use {refused_server.url}: it cannot keep a commit durable")
    assert any("appendfsync" in li and "appendfsync always" in li for li in lines[1:])


@pytest.mark.server
def test_check_with_nothing_listening_is_exit_2() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = invoke(["check", "--json"], url=url)
    assert result.exit_code == 2 and result.stdout == ""
    assert len(error_lines(result)) == 1 and "cannot reach" in result.stderr


@pytest.mark.server
def test_check_unverifiable_without_config_then_declared(make_server: Any) -> None:
    server = make_server("valkey", rename_command='CONFIG ""')
    result = invoke(["check", "--json"], url=server.url)
    assert result.exit_code == 2
    data = as_json(result)
    assert data["verdict"] == "unverifiable" and data["exit_code"] == 2
    assert {f["level"] for f in data["nodes"][0]["findings"]} >= {"unverifiable"}
    declared = ["--declare", "appendfsync=always", "--declare", "no-appendfsync-on-rewrite=no"]
    result = invoke(["check", *declared, "--json"], url=server.url)
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert data["verdict"] == "durable"
    assert data["declared"] == {"appendfsync": "always", "no-appendfsync-on-rewrite": "no"}
    assert any(f["check"] == "config" and f["level"] == "warn" for f in data["nodes"][0]["findings"])
    # a store command on it is refused as unverifiable: exit 2
    assert invoke(["runs"], url=server.url).exit_code == 2


@pytest.mark.server
def test_every_store_command_takes_declare_for_a_config_denied_server(make_server: Any) -> None:
    """--declare is a connection option: on a managed service that denies CONFIG, runs, show
    and the others work once the two settings are declared (before or after the command),
    as check does; without it they are refused as unverifiable (exit 2)."""
    server = make_server("valkey", rename_command='CONFIG ""')
    decl = {"appendfsync": "always", "no-appendfsync-on-rewrite": "no"}
    store = CheckpointStore.from_url(server.url, namespace="default", declared_config=decl)
    with store.acquire("managed", owner="w", ttl=30) as lease:
        lease.commit({"n": 1})
    store.close()
    declared = ["--declare", "appendfsync=always", "--declare", "no-appendfsync-on-rewrite=no"]
    assert invoke(["runs"], url=server.url).exit_code == 2
    listed = invoke(["runs", "--json", *declared], url=server.url)
    assert listed.exit_code == 0, listed.output
    assert "managed" in listed.stdout
    shown = invoke([*declared, "show", "managed"], url=server.url)  # the group's, before the command
    assert shown.exit_code == 0, shown.output
    assert "managed" in shown.stdout
    bad = invoke(["runs", "--declare", "appendfsynk=always"], url=server.url)
    assert bad.exit_code == 2 and "--declare" in bad.output


# --------------------------------------------------------------------------- runs / show


@pytest.mark.server
def test_runs_lists_sorts_and_limits(store: CheckpointStore, durable_server: Any, namespace: str) -> None:
    with store.acquire("b-run", owner="w-b", ttl=10) as lease:
        for i in range(3):
            lease.commit({"i": i})
    time.sleep(0.01)
    held = store.acquire("a-run", owner="w-a", ttl=30)
    held.commit({"i": 0})
    store.acquire("c-run", owner="w-c", ttl=30)  # never committed
    url = durable_server.url

    result = invoke(["runs"], url=url, namespace=namespace)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RUN", "GEN", "FENCE", "HOLDER", "TOKEN", "LEASE", "SIZE", "LAST", "COMMIT", "BYTES",
                                "GENS/STAGED/EVENTS"]
    assert [li.split()[0] for li in lines[1:-1]] == ["a-run", "b-run", "c-run"]
    assert lines[-1].startswith("total: ")  # the runs' bytes on the server
    a_row = lines[1].split()
    assert a_row[1:5] == ["1", "1", "w-a", "1"] and a_row[5].endswith("s")
    assert "released" in lines[2]

    data = as_json(invoke(["runs", "--json"], url=url, namespace=namespace))
    assert set(data) == {"server", "namespace", "sort", "reverse", "total", "all", "bytes_total", "runs"}
    assert data["total"] == 3 and data["namespace"] == namespace and data["sort"] == "run"
    by_id = {r["run"]: r for r in data["runs"]}
    for r in data["runs"]:
        assert set(r) == RUN_KEYS | {"status", "bytes"}
    assert set(by_id["a-run"]["head"]) == HEAD_KEYS and set(by_id["a-run"]["lease"]) == LEASE_KEYS
    assert by_id["a-run"]["lease"]["owner"] == "w-a" and by_id["a-run"]["lease"]["ms_left"] > 20_000
    assert is_iso_utc(by_id["a-run"]["head"]["created_at"]) and by_id["a-run"]["head"]["age_ms"] >= 0
    assert by_id["b-run"]["generation"] == 3 and by_id["b-run"]["kept"] == [1, 2, 3]
    assert by_id["b-run"]["lease"]["state"] == "released" and by_id["b-run"]["lease"]["ms_left"] is None
    assert by_id["c-run"]["head"] is None and by_id["c-run"]["generation"] == 0

    def order(*args: str) -> list[str]:
        return [r["run"] for r in as_json(invoke(["runs", "--json", *args], url=url, namespace=namespace))["runs"]]

    assert order("--sort", "generation") == ["b-run", "a-run", "c-run"]
    assert order("--sort", "age") == ["a-run", "b-run", "c-run"]
    assert order("--sort", "age", "--reverse") == ["c-run", "b-run", "a-run"]
    assert order("--limit", "2") == ["a-run", "b-run"]
    assert order("--reverse", "--limit", "1") == ["c-run"]
    limited = invoke(["runs", "--limit", "1"], url=url, namespace=namespace)
    assert "(1 of 3 runs shown)" in limited.stdout


@pytest.mark.server
def test_runs_in_an_empty_namespace(durable_server: Any, namespace: str) -> None:
    result = invoke(["runs"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 0 and "no runs in namespace" in result.stdout
    assert as_json(invoke(["runs", "--json"], url=durable_server.url, namespace=namespace))["runs"] == []


@pytest.mark.server
def test_show_head_generations_lease_fence(store: CheckpointStore, durable_server: Any, namespace: str) -> None:
    lease = store.acquire("job", owner="worker-a", ttl=30)
    for i in range(4):
        lease.commit({"i": i}, metadata={"step": f"s{i}", "raw": b"\x01"})
    result = invoke(["show", "job"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "fence      1" in out and "generation 4 by worker-a (token 1)" in out
    assert "held by worker-a with token 1" in out and "kept       g2, g3, g4" in out
    assert [li.split()[:2] for li in out.splitlines() if li[:1].isdigit()] == [["4", "ok"], ["3", "ok"], ["2", "ok"]]

    data = as_json(invoke(["show", "job", "--json"], url=durable_server.url, namespace=namespace))
    assert set(data) == {"server", "namespace", "generations", "staged", "content", "status", "expires_ms",
                         "fence_expires_ms", "bytes"} | RUN_KEYS
    assert data["staged"] == {"commits": 0, "bytes": 0}
    assert data["content"] is None  # a plain state: only step-runner and LangGraph runs are described
    assert data["fence"] == 1 and data["generation"] == 4 and data["kept"] == [2, 3, 4]
    assert data["head"]["owner"] == "worker-a" and data["head"]["token"] == 1
    assert data["lease"]["state"] == "held" and is_iso_utc(data["lease"]["expires_at"])
    assert [g["generation"] for g in data["generations"]] == [4, 3, 2]
    for g in data["generations"]:
        assert set(g) == GENERATION_KEYS and g["ok"] is True and g["reason"] is None
        assert is_iso_utc(g["created_at"]) and len(g["checksum"]) == 32
    assert data["generations"][0]["metadata"] == {"step": "s3", "raw": {"base64": "AQ=="}}
    assert data["generations"][0]["checksum"] == data["head"]["checksum"]


@pytest.mark.server
def test_a_missing_run_is_exit_1_for_every_run_command(durable_server: Any, namespace: str, tmp_path: Path) -> None:
    for args in (["show", "nope"], ["fence", "nope"], ["verify", "nope"], ["revoke", "nope", "--yes"],
                 ["delete", "nope", "--yes"], ["export", "nope", "-o", str(tmp_path / "x")]):
        result = invoke(args, url=durable_server.url, namespace=namespace)
        assert result.exit_code == 1, (args, result.output)
        assert error_lines(result) == [f"error: no such run 'nope' in namespace {namespace!r}"]
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- fence


@pytest.mark.server
def test_fence_shows_the_rejected_stale_write_of_a_zombie(store: CheckpointStore, durable_server: Any,
                                                           namespace: str) -> None:
    zombie_scenario(store, "job")
    result = invoke(["fence", "job", "--json"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert set(data) == {"server", "namespace", "run", "fence", "generation", "lease", "events", "rejected"}
    assert data["fence"] == 2 and data["generation"] == 2
    assert data["lease"]["owner"] == "fresh" and data["lease"]["token"] == 2
    for e in data["events"]:
        assert set(e) == EVENT_KEYS and is_iso_utc(e["at"])
    # one commit event, for the commit that created the head (later ones live in the head)
    assert [e["kind"] for e in data["events"]] == ["acquire", "commit", "takeover", "fenced"]
    takeover = data["events"][2]["fields"]
    assert takeover["owner"] == "fresh" and takeover["token"] == "2" and takeover["previous_token"] == "1"
    [rejected] = data["rejected"]
    assert set(rejected) == REJECTED_KEYS
    assert rejected["owner"] == "zombie" and rejected["token"] == 1 and rejected["fence"] == 2
    assert rejected["expected"] == 1 and rejected["id"] == data["events"][-1]["id"]

    human = invoke(["fence", "job"], url=durable_server.url, namespace=namespace)
    assert human.exit_code == 0
    assert "held by fresh with token 2" in human.stdout
    assert "REJECTED stale write by zombie: token 1 < fence 2" in human.stdout
    assert "1 stale write(s)" in human.stdout

    # --count keeps the newest events
    data = as_json(invoke(["fence", "job", "--json", "--count", "2"], url=durable_server.url, namespace=namespace))
    assert [e["kind"] for e in data["events"]] == ["takeover", "fenced"]


@pytest.mark.server
def test_fence_follow_prints_new_events(store: CheckpointStore, durable_server: Any, namespace: str) -> None:
    lease = store.acquire("job", owner="w", ttl=30)

    def later() -> None:
        time.sleep(0.4)
        lease.commit({"late": True})
        store.revoke("job", by="ops")

    t = threading.Thread(target=later)
    t.start()
    try:
        result = invoke(["fence", "job", "--follow", "--json", "--max-seconds", "1.6"],
                        url=durable_server.url, namespace=namespace)
    finally:
        t.join()
    assert result.exit_code == 0, result.output
    first, *rest = [json.loads(li) for li in result.stdout.splitlines()]
    assert first["run"] == "job" and [e["kind"] for e in first["events"]] == ["acquire"]
    assert [e["kind"] for e in rest] == ["commit", "revoke"]
    assert all(set(e) == EVENT_KEYS for e in rest)
    assert rest[1]["fields"]["by"] == "ops" and rest[1]["fields"]["previous_owner"] == "w"

    human = invoke(["fence", "job", "--follow", "--max-seconds", "0.2"], url=durable_server.url, namespace=namespace)
    assert human.exit_code == 0 and "revoke" in human.stdout


# --------------------------------------------------------------------------- verify


@pytest.mark.server
def test_verify_detects_a_damaged_generation(store: CheckpointStore, client: Any, durable_server: Any,
                                             namespace: str, tmp_path: Path) -> None:
    with store.acquire("bad", owner="w", ttl=10) as lease:
        for i in range(3):
            lease.commit({"i": i, "pad": "x" * 100})
    with store.acquire("good", owner="w", ttl=10) as lease:
        lease.commit({"i": 0})
    url = durable_server.url
    assert invoke(["verify", "bad"], url=url, namespace=namespace).exit_code == 0
    client.setrange(RunKeys(namespace, "bad").generation(2), 40, b"\xff\xfe")

    result = invoke(["verify", "bad"], url=url, namespace=namespace)
    assert result.exit_code == 1
    assert error_lines(result) == ["error: 1 damaged generation(s): run 'bad' g2: checksum"]
    row = next(li for li in result.stdout.splitlines() if li.split()[:2] == ["bad", "2"])
    assert "DAMAGED" in row and "checksum" in row

    result = invoke(["verify", "--all", "--json"], url=url, namespace=namespace)
    assert result.exit_code == 1
    data = as_json(result)
    assert set(data) == {"server", "namespace", "ok", "runs_checked", "generations_checked", "failures",
                         "staged_bytes", "runs"}
    assert data["ok"] is False and data["runs_checked"] == 2 and data["generations_checked"] == 4
    assert data["failures"] == [{"run": "bad", "generation": 2, "reason": "checksum",
                                 "detail": "xxh3-128 digest does not match the content"}]
    runs = {r["run"]: r for r in data["runs"]}
    assert runs["good"]["ok"] is True and runs["bad"]["ok"] is False
    assert [g["ok"] for g in runs["bad"]["generations"]] == [True, False, True]
    assert set(runs["bad"]["generations"][0]) == {"generation", "ok", "reason", "detail", "size", "checksum"}
    assert invoke(["verify", "good", "--json"], url=url, namespace=namespace).exit_code == 0

    # the damage also shows in `show`, and export of that generation is refused
    assert "DAMAGED" in invoke(["show", "bad"], url=url, namespace=namespace).stdout
    refused = invoke(["export", "bad", "--generation", "2", "-o", str(tmp_path / "g2")], url=url, namespace=namespace)
    assert refused.exit_code == 1 and not (tmp_path / "g2").exists()
    assert error_lines(refused) == [f"error: generation 2 of run 'bad' is damaged: checksum: "
                                    "xxh3-128 digest does not match the content"]
    assert invoke(["export", "bad", "-o", str(tmp_path / "ok")], url=url, namespace=namespace).exit_code == 0


# --------------------------------------------------------------------------- revoke / delete


@pytest.mark.server
def test_revoke_asks_and_fences_off_the_holder(store: CheckpointStore, durable_server: Any, namespace: str) -> None:
    lease = store.acquire("job", owner="worker-a", ttl=30)
    lease.commit({"i": 1})
    url = durable_server.url
    declined = invoke(["revoke", "job"], url=url, namespace=namespace, input="n\n")
    assert declined.exit_code == 1
    assert "Revoke run 'job'" in declined.stderr and "worker-a (token 1)" in declined.stderr
    assert store.info("job").fence == 1 and store.info("job").lease_owner == "worker-a"
    lease.commit({"i": 2})  # still the holder

    accepted = invoke(["revoke", "job"], url=url, namespace=namespace, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "fence 1 -> 2" in accepted.stdout
    assert store.info("job").fence == 2
    with pytest.raises(FencedError):
        lease.commit({"i": 3})

    result = invoke(["revoke", "job", "--yes", "--json", "--by", "ops-alice"], url=url, namespace=namespace)
    assert result.exit_code == 0
    data = as_json(result)
    assert data == {"server": data["server"], "namespace": namespace, "run": "job", "fence": 3,
                    "previous_fence": 2, "previous_holder": None, "by": "ops-alice"}
    assert store.events("job", count=1)[0].fields["by"] == "ops-alice"


@pytest.mark.server
def test_delete_asks_and_keeps_the_fence(store: CheckpointStore, durable_server: Any, namespace: str) -> None:
    with store.acquire("job", owner="w", ttl=30) as lease:
        lease.commit({"i": 1})
        lease.commit({"i": 2})
    url = durable_server.url
    declined = invoke(["delete", "job"], url=url, namespace=namespace, input="n\n")
    assert declined.exit_code == 1 and "Delete run 'job'" in declined.stderr
    assert store.load("job") is not None and store.info("job").generation == 2

    result = invoke(["delete", "job", "--json"], url=url, namespace=namespace, input="y\n")
    assert result.exit_code == 0, result.output
    data = as_json(result)  # the prompt went to stderr: stdout is only the JSON
    assert set(data) == {"server", "namespace", "run", "deleted_generations", "fence", "previous_fence", "by"}
    assert data["deleted_generations"] == 2 and data["previous_fence"] == 1
    fence = store.info("job").fence
    assert data["fence"] == fence and fence >= 1  # kept (the store bumps it)
    assert store.load("job") is None
    shown = as_json(invoke(["show", "job", "--json"], url=url, namespace=namespace))  # the tombstone
    assert shown["fence"] == fence and shown["head"] is None and shown["generations"] == []
    again = store.acquire("job", owner="w2", ttl=5)
    assert again.token > fence  # tokens keep rising across the deletion


# --------------------------------------------------------------------------- export / import


@pytest.mark.server
def test_export_delete_import_round_trip(store: CheckpointStore, durable_server: Any, namespace: str,
                                         tmp_path: Path) -> None:
    with store.acquire("job", owner="w", ttl=30) as lease:
        for i in range(3):
            lease.commit({"i": i, "tags": {"a", "b"}}, metadata={"step": i})
    before = store.load("job")
    url = durable_server.url
    out = tmp_path / "job.rckp"

    result = invoke(["export", "job", "-o", str(out), "--json"], url=url, namespace=namespace)
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert set(data) == {"server", "namespace", "run", "generation", "token", "owner", "size", "checksum", "file"}
    assert data["run"] == "job" and data["generation"] == 3 and data["size"] == out.stat().st_size
    assert data["checksum"] == before.checksum
    assert out.read_bytes() == store.export_frame("job")

    older = tmp_path / "g2.rckp"
    human = invoke(["export", "job", "--generation", "2", "-o", str(older)], url=url, namespace=namespace)
    assert human.exit_code == 0 and "generation 2" in human.stdout
    missing = invoke(["export", "job", "--generation", "9", "-o", str(tmp_path / "g9")], url=url, namespace=namespace)
    assert missing.exit_code == 1 and len(error_lines(missing)) == 1 and not (tmp_path / "g9").exists()

    assert invoke(["delete", "job", "--yes"], url=url, namespace=namespace).exit_code == 0
    assert store.load("job") is None

    result = invoke(["import", str(out), "--json"], url=url, namespace=namespace)
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert set(data) == {"server", "namespace", "run", "generation", "token", "owner", "size", "checksum",
                         "fence", "file"}
    assert data["run"] == "job" and data["generation"] == 3 and data["fence"] >= 1
    after = store.load("job")
    assert after.state == before.state and after.generation == 3 and after.checksum == before.checksum

    again = invoke(["import", str(out)], url=url, namespace=namespace)  # the same frame: recognised, not re-applied
    assert again.exit_code == 0 and "generation 3" in again.stdout
    assert [e.kind for e in store.events("job")].count("import") == 1
    assert invoke(["import", str(older)], url=url, namespace=namespace).exit_code == 1  # never backwards

    damaged = tmp_path / "damaged.rckp"
    blob = bytearray(out.read_bytes())
    blob[30] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    result = invoke(["import", str(damaged)], url=url, namespace=namespace)
    assert result.exit_code == 1 and "is not a valid redis-ckpt frame: checksum" in result.stderr
    assert invoke(["import", str(tmp_path / "absent.rckp")], url=url, namespace=namespace).exit_code == 2


@pytest.mark.server
def test_export_to_stdout(store: CheckpointStore, durable_server: Any, namespace: str) -> None:
    with store.acquire("job", owner="w", ttl=30) as lease:
        lease.commit({"i": 1})
    result = invoke(["export", "job", "-o", "-"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 0
    assert result.stdout_bytes == store.export_frame("job")
    assert "exported run 'job' generation 1" in result.stderr


def test_export_into_a_fifo_or_through_a_symlink_writes_into_it_and_keeps_it(
        store: CheckpointStore, durable_server: Any, namespace: str, tmp_path: Path) -> None:
    """The export used to write a temporary file and rename it over the path: run as root,
    'export ... -o /dev/null' replaced the device with a regular file, and a symlink became a
    file of its own. A path that is not a regular file is written in place, a symlink's target
    is the file replaced."""
    import os
    import stat
    import threading

    with store.acquire("job", owner="w", ttl=30) as lease:
        lease.commit({"i": 1})
    frame = store.export_frame("job")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = invoke(["export", "job", "-o", str(fifo)], url=durable_server.url, namespace=namespace)
    reader.join(30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got == [frame]
    target = tmp_path / "frames" / "job.rckp"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "latest.rckp"
    link.symlink_to(target)
    result = invoke(["export", "job", "-o", str(link)], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_bytes() == frame
    assert sorted(p.name for p in target.parent.iterdir()) == ["job.rckp"]  # no temporary file left


def test_ctrl_c_right_after_fence_follow_printed_its_first_line_ends_it_with_exit_0(
        store: CheckpointStore, durable_server: Any, namespace: str, monkeypatch: Any) -> None:
    """Ctrl-C between the fence's first line and the follow loop ended as 'aborted' (exit 1);
    a follow ends with exit 0 whenever Ctrl-C comes (CI met this window once)."""
    from redis_ckpt.cli import views

    store.acquire("job", owner="w", ttl=30).commit({"i": 1})
    shown = views.fence

    def then_ctrl_c(*args: Any, **kwargs: Any) -> None:
        shown(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(views, "fence", then_ctrl_c)
    result = invoke(["fence", "job", "--follow"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 0, result.output
    assert "job" in result.stdout
    result = invoke(["fence", "job"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 1  # without --follow, Ctrl-C is still an abort


# --------------------------------------------------------------------------- passwords


@pytest.fixture(scope="module")
def password_server(make_module_server: Any) -> Any:
    return make_module_server("valkey", password=PASSWORD)


@pytest.mark.server
def test_the_password_is_never_printed(password_server: Any, tmp_path: Path) -> None:
    ns = "t" + uuid.uuid4().hex[:10]
    url = password_server.url
    assert PASSWORD in url
    store = CheckpointStore.from_url(url, namespace=ns)
    try:
        zombie_scenario(store, "job")
    finally:
        store.close()
    frame = tmp_path / "job.rckp"
    outputs: list[str] = []
    for args in (["check"], ["check", "--json"], ["runs"], ["runs", "--json"], ["show", "job"],
                 ["show", "job", "--json"], ["fence", "job"], ["fence", "job", "--json"], ["verify", "--all"],
                 ["verify", "job", "--json"], ["export", "job", "-o", str(frame)], ["show", "nope"],
                 ["import", str(frame)], ["revoke", "job", "--yes"], ["delete", "job", "--yes", "--json"],
                 ["check", "--replicas", "2"], ["show", "a{b"]):
        result = invoke(args, url=url, namespace=ns)
        assert result.exit_code in (0, 1, 2)
        outputs.append(result.output)
    wrong = invoke(["runs"], url=url.replace(PASSWORD, "wr0ngpass"), namespace=ns)
    assert wrong.exit_code == 2 and len(error_lines(wrong)) == 1
    outputs.append(wrong.output)
    for variant in (url.replace("/0", "/0?password=" + PASSWORD),
                    f"redis://default:{PASSWORD}@127.0.0.1:{free_port()}/0"):
        outputs.append(invoke(["runs"], url=variant, namespace=ns).output)
        outputs.append(invoke(["check", "--json"], url=variant, namespace=ns).output)
    for text in outputs:
        assert PASSWORD not in text and "wr0ngpass" not in text
    assert outputs[0].splitlines()[0].endswith(f"redis://:***@127.0.0.1:{password_server.port}/0")


# --------------------------------------------------------------------------- real processes


@pytest.mark.server
def test_real_subprocesses(store: CheckpointStore, durable_server: Any, namespace: str) -> None:
    zombie_scenario(store, "job")
    env = {**os.environ, "REDIS_CKPT_URL": durable_server.url, "REDIS_CKPT_NAMESPACE": namespace}
    proc = subprocess.run([sys.executable, "-m", "redis_ckpt.cli", "fence", "job", "--json"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    [rejected] = json.loads(proc.stdout)["rejected"]
    assert rejected["owner"] == "zombie" and rejected["token"] == 1

    script = Path(sys.executable).with_name("redis-ckpt")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run([str(script), "show", "nope"], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == f"error: no such run 'nope' in namespace {namespace!r}"
    assert "Traceback" not in proc.stderr


def test_main_exits_with_the_documented_code() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["show", "x", "--url", f"redis://127.0.0.1:{free_port()}/0"])
    assert exited.value.code == 2


# --------------------------------------------------------------------------- demo


@pytest.mark.server
def test_demo_on_a_local_server_leaves_data_the_cli_can_inspect(tmp_path: Path) -> None:
    """No --url: the demo starts its own durable Valkey; its AOF holds the fenced write."""
    from redis_ckpt.testing import LocalServer

    data_dir = tmp_path / "demo-data"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_CKPT_URL", "REDIS_CKPT_NAMESPACE")}
    proc = subprocess.run([sys.executable, "-m", "redis_ckpt.cli", "demo", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "started a local durable Valkey" in proc.stdout and "demo OK" in proc.stdout
    assert "Traceback" not in proc.stderr
    with LocalServer("valkey", data_dir=data_dir) as server:  # reloads the demo's AOF
        data = as_json(invoke(["fence", "demo-job", "--json", "--count", "200"], url=server.url, namespace="default"))
        assert [r["owner"] for r in data["rejected"]] == ["worker-2"]
        shown = as_json(invoke(["show", "demo-job", "--json"], url=server.url, namespace="default"))
        assert shown["generation"] == 10 and shown["head"]["owner"] == "worker-3"


@pytest.mark.parametrize("bad", ["redis://:pw-xyz@127.0.0.1:{port}/abc", "redis://:pw-xyz@127.0.0.1:{port}/0?foo=1",
                                 "http://127.0.0.1:{port}"])
@pytest.mark.parametrize("given", ["--url", "REDIS_CKPT_URL"])
def test_the_main_job_with_a_bad_url_says_so_in_one_line(bad: str, given: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m redis_ckpt --url BAD` (or a bad $REDIS_CKPT_URL) printed a ValueError traceback."""
    from redis_ckpt import demo

    url = bad.format(port=free_port())
    env = {"REDIS_CKPT_URL": url} if given == "REDIS_CKPT_URL" else {}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        code = demo.main(["--url", url] if given == "--url" else [])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    [line] = out.err.splitlines()
    assert line.startswith("error: bad --url redis://:***@127.0.0.1:") or line.startswith("error: bad --url http")
    assert "pw-xyz" not in out.err


@pytest.mark.parametrize("where", ["file", "file/sub"])
def test_the_main_job_with_a_data_dir_it_cannot_create_says_so_in_one_line(where: str, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m redis_ckpt --data-dir PATH` (and `redis-ckpt demo --data-dir PATH`) where PATH
    is a file, or under one, printed a FileExistsError / NotADirectoryError traceback (the CLI:
    'a bug in redis-ckpt', exit 3)."""
    from redis_ckpt import demo

    (tmp_path / "file").write_text("")
    data_dir = str(tmp_path / where)
    assert demo.main(["--data-dir", data_dir]) == 2
    out = capsys.readouterr()
    [line] = out.err.splitlines()
    assert line.startswith(f"error: cannot use the data directory {data_dir}: ") and out.out == ""
    result = invoke(["demo", "--data-dir", data_dir])  # a file: click's own usage error
    assert result.exit_code == 2 and "unexpected" not in result.stderr and data_dir in result.stderr


def test_demo_passes_its_options_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis_ckpt.demo

    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    monkeypatch.setattr(redis_ckpt.demo, "main", fake_main)
    url = f"redis://:{PASSWORD}@127.0.0.1:6379/0"
    result = invoke(["demo", "--url", url, "--run", "r1"])
    assert result.exit_code == 3 and seen[-1] == ["--run", "r1", "--url", url]
    assert invoke(["demo", "--data-dir", "/tmp/d"]).exit_code == 3 and seen[-1] == ["--run", "demo-job",
                                                                                    "--data-dir", "/tmp/d"]
    assert invoke(["demo"], env={"REDIS_CKPT_URL": url}).exit_code == 3 and seen[-1][-2:] == ["--url", url]
    assert invoke(["demo"], env={"REDIS_CKPT_URL": ""}).exit_code == 3 and seen[-1] == ["--run", "demo-job"]


def test_demo_rejects_data_dir_with_url() -> None:
    result = invoke(["demo", "--url", "redis://127.0.0.1:1/0", "--data-dir", "/tmp/x"])
    assert result.exit_code == 2


def test_the_main_job_refuses_data_dir_with_a_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m redis_ckpt --data-dir D` with $REDIS_CKPT_URL set (as `redis-ckpt server` tells
    users to export it) ran the job on that server and ignored D without a word; `redis-ckpt
    demo` refuses the pair. Now the main job does too, before anything runs."""
    from redis_ckpt import demo

    monkeypatch.setenv("REDIS_CKPT_URL", f"redis://:pw-xyz@127.0.0.1:{free_port()}/0")
    assert demo.main(["--data-dir", str(tmp_path / "d")]) == 2
    out = capsys.readouterr()
    assert out.err.splitlines() == ["error: --data-dir is for the local server; it cannot be used with "
                                    "--url or $REDIS_CKPT_URL"] and out.out == ""
    assert not (tmp_path / "d").exists()


def test_a_sentinel_password_in_the_url_is_never_printed():
    from redis_ckpt.urls import redact_url

    url = "redis+sentinel://:pw1@127.0.0.1:1/mymaster?sentinel_password=s3ntinel"
    shown = redact_url(url)
    assert "s3ntinel" not in shown and "pw1" not in shown
    result = CliRunner().invoke(cli, ["--url", url, "runs"])
    assert result.exit_code == 2
    assert "s3ntinel" not in result.output and "pw1" not in result.output


@pytest.mark.server
def test_show_displays_a_step_runner_runs_steps_and_results(durable_server, namespace, client):
    from redis_ckpt import CheckpointStore
    from redis_ckpt.steps import StepRunner

    store = CheckpointStore(client, namespace=namespace)
    runner = StepRunner(store, "steps-job", owner="w", ttl=10)
    runner.add("fetch", lambda ctx: {"rows": 3})
    runner.add("parse", lambda ctx: ctx.results["fetch"]["rows"] * 2)
    runner.run()
    out = invoke(["show", "steps-job"], url=durable_server.url, namespace=namespace)
    assert out.exit_code == 0, out.output
    assert "step runner: 2/2 steps done, finished" in out.output
    assert "fetch" in out.output and "parse" in out.output and "{'rows': 3}" in out.output
    data = json.loads(invoke(["show", "steps-job", "--json"], url=durable_server.url, namespace=namespace).stdout)
    assert data["content"]["kind"] == "step-runner"
    assert data["content"]["steps"]["completed"] == ["fetch", "parse"]
    assert data["content"]["steps"]["results"]["parse"] == 6


@pytest.mark.server
@pytest.mark.parametrize("command", [["revoke", "job", "--yes"], ["delete", "job", "--yes"], ["fork", "job", "job-2"],
                                     ["prune", "--idle", "1ms", "--yes"]])
def test_an_empty_by_is_refused_not_replaced_by_the_default(store: CheckpointStore, durable_server: Any,
                                                           namespace: str, command: list[str]) -> None:
    """``--by ""`` silently became the default name in the audit event; the store refuses an
    empty owner (6395c51), so the CLI says so: exit 2, nothing changed."""
    lease = store.acquire("job", owner="worker-a", ttl=30)
    lease.commit({"i": 1})
    lease.release()
    before = store.info("job")
    result = invoke([*command, "--by", ""], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 2, result.output
    assert "by" in result.stderr or "owner" in result.stderr, result.stderr
    after = store.info("job")
    assert (after.fence, after.kept, after.status) == (before.fence, before.kept, before.status)
    assert store.runs() == ["job"]
