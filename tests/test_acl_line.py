"""The least-privilege ACL lines docs/RELIABILITY.md publishes, taken from the document itself:
a user made from the store's line passes the startup probe and runs every store operation, a
user made from the saver's line runs every LangGraph saver operation (the chaos scenario also
shows each command of the lines is needed)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from redis_ckpt import CheckpointStore, ServerError

sys.path.insert(0, str(Path(__file__).resolve().parent / "chaos"))
from scenario_security import ACL_COMMANDS, SAVER_COMMANDS, acl_line, saver_workflow, workflow  # noqa: E402

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RELIABILITY.md"


def documented_lines() -> list[str]:
    """The store's line, then the line of a user that runs the LangGraph saver too."""
    return [ln for ln in DOC.read_text().splitlines() if ln.startswith("ACL SETUSER ")]


def documented_line() -> str:
    return documented_lines()[0]


def test_the_documented_lines_are_the_ones_the_chaos_scenario_tests():
    assert documented_lines() == [acl_line("jobs", "ckpt", "PASSWORD"),
                                  acl_line("jobs", "ckpt", "PASSWORD", ACL_COMMANDS + SAVER_COMMANDS)]


def test_the_saver_line_grants_every_command_the_saver_code_sends():
    """Every command the saver's scripts call (a literal redis.call) and its flows send (Cmd)
    is in the saver's line: a command added to the saver is added to the line too."""
    scripts = "".join(p.read_text() for p in (ROOT / "redis_ckpt" / "lua").glob("saver_*.lua"))
    assert not re.findall(r"redis\.p?call\((?!')", scripts)  # every command a literal
    flows = "".join(p.read_text() for p in (ROOT / "redis_ckpt" / "integrations" / "langgraph").glob("*.py"))
    sent = {c.lower() for c in re.findall(r"redis\.p?call\('([A-Za-z]+)'", scripts)}
    sent |= {c.lower() for c in re.findall(r'Cmd\("([A-Z]+)"', flows)}
    granted = set(ACL_COMMANDS + SAVER_COMMANDS)
    assert len(sent) > 20 and sent <= granted, sent - granted


@contextmanager
def documented_user(line: str, client, namespace, server) -> Iterator[str]:
    """A user made from a documented line for ``namespace``; its URL."""
    user = f"doc-{namespace}"
    rules = line.split()[3:]  # after ACL SETUSER ckpt
    rules = [">pw" if r == ">PASSWORD" else f"~{namespace}:*" if r == "~jobs:*" else r for r in rules]
    client.script_flush()  # SCRIPT LOAD is needed too
    client.execute_command("ACL", "SETUSER", user, *rules)
    try:
        yield f"redis://{user}:pw@{server.host}:{server.port}/0"
    finally:
        client.execute_command("ACL", "DELUSER", user)


def test_a_user_made_from_the_documented_line_passes_the_probe_and_runs_every_operation(client, namespace,
                                                                                         durable_server):
    with documented_user(documented_line(), client, namespace, durable_server) as url:
        with CheckpointStore.from_url(url, namespace=namespace) as store:
            report = store.probe()
            assert report.ok, report.findings
            (waitaof,) = [f for f in report.findings if f.check == "waitaof"]
            assert waitaof.level == "ok", waitaof
        workflow(url, namespace)


def test_a_user_made_from_the_documented_saver_line_runs_every_saver_operation(client, namespace, durable_server):
    """put, put_writes, get_tuple, list, copy_thread, prune, delete_for_runs, delete_thread,
    and a thread under a TTL (saver_workflow); the store's own line is refused a saver write."""
    store_line, saver_line = documented_lines()
    with documented_user(saver_line, client, namespace, durable_server) as url:
        saver_workflow(url, namespace)
    with documented_user(store_line, client, namespace, durable_server) as url:
        with pytest.raises(ServerError, match="no permissions"):
            saver_workflow(url, namespace)
