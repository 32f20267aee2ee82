"""The least-privilege ACL line docs/RELIABILITY.md publishes, taken from the document itself:
a user made from it passes the startup probe and runs every store operation (those the chaos
scenario also shows each command of the line is needed for)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from redis_ckpt import CheckpointStore

sys.path.insert(0, str(Path(__file__).resolve().parent / "chaos"))
from scenario_security import acl_line, workflow  # noqa: E402

pytestmark = pytest.mark.server

DOC = Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md"


def documented_line() -> str:
    (line,) = [ln for ln in DOC.read_text().splitlines() if ln.startswith("ACL SETUSER ")]
    return line


def test_the_documented_line_is_the_one_the_chaos_scenario_tests():
    assert documented_line() == acl_line("jobs", "ckpt", "PASSWORD")


def test_a_user_made_from_the_documented_line_passes_the_probe_and_runs_every_operation(client, namespace,
                                                                                         durable_server):
    user = f"doc-{namespace}"
    rules = documented_line().split()[3:]  # after ACL SETUSER ckpt
    rules = [">pw" if r == ">PASSWORD" else f"~{namespace}:*" if r == "~jobs:*" else r for r in rules]
    client.script_flush()  # SCRIPT LOAD is needed too
    client.execute_command("ACL", "SETUSER", user, *rules)
    try:
        url = f"redis://{user}:pw@{durable_server.host}:{durable_server.port}/0"
        with CheckpointStore.from_url(url, namespace=namespace) as store:
            report = store.probe()
            assert report.ok, report.findings
            (waitaof,) = [f for f in report.findings if f.check == "waitaof"]
            assert waitaof.level == "ok", waitaof
        workflow(url, namespace)
    finally:
        client.execute_command("ACL", "DELUSER", user)
