"""The CLI's lifecycle commands on real servers: show --state (tagged JSON, a named
generation, a damaged one), the bytes of runs and show, fork, prune, deleted/expired runs."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from click.testing import CliRunner

from redis_ckpt import CheckpointStore
from redis_ckpt.cli import cli
from redis_ckpt.core.keys import RunKeys

pytestmark = pytest.mark.server


def run(args: list[str], server, namespace: str, input: str | None = None):
    result = CliRunner().invoke(cli, [*args, "--url", server.url, "--namespace", namespace], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def store(client, namespace) -> CheckpointStore:
    s = CheckpointStore(client, namespace=namespace, keep=3)
    with s.acquire("job", owner="w", ttl=30) as lease:
        for i in range(1, 4):
            lease.commit({"i": i, "when": datetime(2026, 1, i, tzinfo=timezone.utc), "cost": Decimal("1.10"),
                          "blob": b"\x00\x01", "tags": {"a"}})
    return s


def test_show_state_prints_the_state_as_tagged_json(store, durable_server, namespace):
    out = run(["show", "job", "--state"], durable_server, namespace)
    assert out.exit_code == 0, out.output
    state = json.loads(out.stdout)
    assert state == {"i": 3, "when": {"$datetime": "2026-01-03T00:00:00+00:00"}, "cost": {"$decimal": "1.10"},
                     "blob": {"$bytes": "AAE="}, "tags": {"$set": ["a"]}}
    out = run(["show", "job", "--state", "--generation", "2", "--json"], durable_server, namespace)
    data = json.loads(out.stdout)
    assert (data["generation"], data["head_generation"], data["ok"], data["state"]["i"]) == (2, 3, True, 2)
    missing = run(["show", "job", "--state", "-g", "9"], durable_server, namespace)
    assert missing.exit_code == 1 and "kept: 3, 2, 1" in missing.stderr
    assert run(["show", "job", "-g", "2"], durable_server, namespace).exit_code == 2  # --generation needs --state


def test_show_state_of_a_damaged_generation_says_how_far_it_verifies(store, client, durable_server, namespace):
    key = RunKeys(namespace, "job").generation(2)
    client.setrange(key, client.strlen(key) - 24, b"\xff\xff")  # inside the payload
    out = run(["show", "job", "--state", "-g", "2", "--json"], durable_server, namespace)
    assert out.exit_code == 1
    data = json.loads(out.stdout)
    damage = data["damage"]
    assert data["ok"] is False and damage["reason"] == "checksum" and damage["failed"] == "checksum"
    assert damage["verified"] == ["stored", "magic", "format", "length"]
    assert damage["header"]["verified"] is False and damage["header"]["fields"]["run"] == "job"
    assert "cost" not in out.stdout  # the payload is never decoded
    text = run(["show", "job", "--state", "-g", "2"], durable_server, namespace)
    assert text.exit_code == 1 and "UNVERIFIED" in text.stdout and "failed at" in text.stdout
    newest = run(["show", "job", "--state"], durable_server, namespace)  # g3 is fine
    assert newest.exit_code == 0 and json.loads(newest.stdout)["i"] == 3


def test_runs_and_show_count_bytes_and_hide_deleted_runs(store, durable_server, namespace):
    store.acquire("gone", owner="w", ttl=30).commit(1)
    store.delete("gone")
    out = json.loads(run(["runs", "--json"], durable_server, namespace).stdout)
    assert [x["run"] for x in out["runs"]] == ["job"] and out["total"] == 1
    (job,) = out["runs"]
    assert job["status"] == "committed" and job["bytes"]["generations"] > 0
    assert out["bytes_total"] == job["bytes"]["total"] == store.usage("job").total
    every = json.loads(run(["runs", "--json", "--all"], durable_server, namespace).stdout)
    assert {x["run"]: x["status"] for x in every["runs"]} == {"gone": "deleted", "job": "committed"}
    text = run(["runs", "--all"], durable_server, namespace).stdout
    assert "gone (deleted)" in text and "total:" in text
    shown = json.loads(run(["show", "job", "--json"], durable_server, namespace).stdout)
    assert shown["bytes"] == {**shown["bytes"], "total": store.usage("job").total} and shown["status"] == "committed"
    assert "bytes" in run(["show", "job"], durable_server, namespace).stdout


def test_namespaces_counts_the_runs_that_runs_lists(store, client, durable_server, namespace):
    """`namespaces` counted every fence key, deleted and expired runs (tombstones) included,
    while `runs` leaves them out: the counts differed for the same namespace."""
    from redis_ckpt.testing.wait import wait_for

    store.acquire("gone", owner="w", ttl=30).commit(1)
    store.delete("gone")
    lease = store.acquire("done", owner="w", ttl=30)
    lease.commit(1)
    lease.finish(keep_for=0.05)
    wait_for(lambda: store.info("done").status == "expired", "the run 'done' to expire")
    store.acquire("new", owner="w", ttl=30)  # acquired, never committed: a run
    only_tombstones = namespace + "-t"
    other = CheckpointStore(client, namespace=only_tombstones)
    other.acquire("x", owner="w", ttl=30).commit(1)
    other.delete("x")
    listed = json.loads(run(["runs", "--json"], durable_server, namespace).stdout)
    assert sorted(x["run"] for x in listed["runs"]) == ["job", "new"]
    counted = {n["namespace"]: n["runs"] for n in
               json.loads(run(["namespaces", "--json"], durable_server, namespace).stdout)["namespaces"]}
    assert counted[namespace] == listed["total"] == 2 and only_tombstones not in counted
    assert re.search(rf"^{namespace} +2$", run(["namespaces"], durable_server, namespace).stdout, re.M)


def test_fork_from_the_cli(store, durable_server, namespace):
    out = run(["fork", "job", "job-2", "--generation", "2", "--json", "--by", "me"], durable_server, namespace)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert (data["new_run"], data["generation"], data["source_generation"], data["by"]) == ("job-2", 1, 2, "me")
    assert store.load("job-2").state["i"] == 2
    again = run(["fork", "job", "job-2"], durable_server, namespace)
    assert again.exit_code == 1 and "already has a head" in again.stderr


def test_fork_from_the_cli_of_a_run_with_a_newer_schema(client, durable_server, namespace):
    """The CLI (schema 1, no migrations) loaded the new run after forking it to print the
    source generation: for an application's run at schema 3 that load raised
    SchemaVersionError, so `fork` exited 1 with nothing on stdout - a definite "no" - although
    the fork was written (and a retry then said it already has a head)."""
    app = CheckpointStore(client, namespace=namespace, schema_version=3)
    with app.acquire("job", owner="w", ttl=30) as lease:
        lease.commit({"i": 1})
        lease.commit({"i": 2})
    out = run(["fork", "job", "job-2", "--json"], durable_server, namespace)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert (data["new_run"], data["generation"], data["source_generation"]) == ("job-2", 1, 2)
    assert data["checksum"] == app.generations("job")[0].checksum and data["fence"] == app.info("job-2").fence
    assert app.load("job-2").state == {"i": 2}
    text = run(["fork", "job", "job-3"], durable_server, namespace)
    assert text.exit_code == 0 and "generation 2 into 'job-3'" in text.stdout, text.output


def test_show_state_of_a_run_with_another_schema_is_shown_as_stored(client, durable_server, namespace):
    """The CLI's store (schema 1, no migrations) loaded the state to show it: a run an
    application wrote at schema 3 failed with SchemaVersionError (exit 1), and `show` left out
    what a step runner's state holds. The CLI shows any run's state as stored, naming its
    schema; an application's load still migrates or refuses."""
    from redis_ckpt import SchemaVersionError
    from redis_ckpt.steps import StepRunner

    app = CheckpointStore(client, namespace=namespace, schema_version=3)
    with app.acquire("job", owner="w", ttl=30) as lease:
        lease.commit({"i": 1})
        lease.commit({"i": 2})
    out = run(["show", "job", "--state"], durable_server, namespace)
    assert out.exit_code == 0 and json.loads(out.stdout) == {"i": 2}, out.output
    data = json.loads(run(["show", "job", "--state", "-g", "1", "--json"], durable_server, namespace).stdout)
    assert (data["state"], data["schema_version"], data["stored_schema_version"]) == ({"i": 1}, 3, 3)
    runner = StepRunner(app, "steps")
    runner.add("a", lambda ctx: 1)
    runner.run()
    shown = json.loads(run(["show", "steps", "--json"], durable_server, namespace).stdout)
    assert shown["content"]["kind"] == "step-runner" and shown["content"]["steps"]["finished"], shown["content"]
    with pytest.raises(SchemaVersionError):  # the library's own rule is unchanged
        CheckpointStore(client, namespace=namespace).load("job")
    with pytest.raises(SchemaVersionError):
        CheckpointStore(client, namespace=namespace, schema_version=4).load("job", generation=1)


@pytest.mark.parametrize("args", [["export", "job", "-o", "{dir}/job.rckp"], ["show", "job", "--state"],
                                  ["fork", "job", "job-2"]])
def test_a_fallback_past_a_damaged_generation_is_a_warning_not_an_error(store, client, durable_server, namespace,
                                                                        tmp_path, args):
    """A command that succeeded past a damaged newest generation (exit 0, its output on
    stdout) printed the library's ERROR log of the fallback as "error: ..." - with --json as
    {"error": ...} without an exit_code - the CLI's form of a failed command. It is a warning."""
    key = RunKeys(namespace, "job").generation(3)
    client.setrange(key, client.strlen(key) - 24, b"\xff\xff")
    args = [a.format(dir=tmp_path) for a in args]
    text = run(args, durable_server, namespace)
    assert text.exit_code == 0 and text.stdout, text.output
    assert "error" not in text.stderr and "warning: run 'job'" in text.stderr and "g3: checksum" in text.stderr
    client.delete(RunKeys(namespace, "job-2").head, RunKeys(namespace, "job-2").generation(1))
    data = run([*args, "--json"], durable_server, namespace)
    assert data.exit_code == 0 and json.loads(data.stdout), data.output
    objects = [json.loads(line) for line in data.stderr.splitlines()]
    assert objects and all(set(o) == {"warning"} for o in objects), data.stderr


def test_prune_from_the_cli(store, durable_server, namespace):
    time.sleep(0.3)
    dry = json.loads(run(["prune", "--idle", "250ms", "--dry-run", "--json"], durable_server, namespace).stdout)
    assert dry["dry_run"] and [x["run"] for x in dry["runs"]] == ["job"] and dry["runs"][0]["generations"] == 3
    assert store.load("job") is not None
    declined = run(["prune", "--idle", "250ms"], durable_server, namespace, input="n\n")
    assert declined.exit_code == 1 and store.load("job") is not None
    done = json.loads(run(["prune", "--idle", "250ms", "--json", "--yes"], durable_server, namespace).stdout)
    assert done["count"] == 1 and done["runs"][0]["pruned"] and store.load("job") is None
    assert run(["prune", "--idle", "0"], durable_server, namespace).exit_code == 2
    assert run(["prune", "--idle", "7 days"], durable_server, namespace).exit_code == 2


def test_prune_from_the_cli_leaves_a_run_kept_by_keep_for(store, durable_server, namespace):
    """A run finished with keep_for longer than --idle expires by itself when asked: the CLI's
    prune and its dry run leave it; the idle run without a retention is pruned."""
    with store.acquire("kept", owner="w", ttl=30) as lease:
        lease.commit(1)
        lease.finish(keep_for=30 * 86400)
    time.sleep(0.3)
    dry = json.loads(run(["prune", "--idle", "250ms", "--dry-run", "--json"], durable_server, namespace).stdout)
    assert [x["run"] for x in dry["runs"]] == ["job"]
    done = json.loads(run(["prune", "--idle", "250ms", "--json", "--yes"], durable_server, namespace).stdout)
    assert [x["run"] for x in done["runs"]] == ["job"] and store.load("job") is None
    assert store.load("kept").state == 1 and store.info("kept").status == "committed"
