"""Namespaces and run ids with glob characters: SCAN MATCH reads them literally (real servers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from redis_ckpt import CheckpointStore
from redis_ckpt.core.keys import RunKeys, glob_escape
from redis_ckpt.cli import cli

pytestmark = pytest.mark.server

# each namespace next to the ones its unescaped pattern would match (or be shadowed by)
SUFFIXES = ["[1]", "1", "\\b", "b", "[", "*", "?", "x", "[a-z]", "a", "]"]


@pytest.fixture
def spaces(client: Any, namespace: str) -> Iterator[list[str]]:
    """Namespaces ``<fresh prefix><suffix>``; every key under the prefix is deleted afterwards."""
    yield [namespace + s for s in SUFFIXES]
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))  # the prefix is hex: no glob in it
    if keys:
        client.unlink(*keys)


def test_glob_escape_is_literal_for_every_special_character() -> None:
    assert glob_escape("job[1]") == "job\\[1\\]"
    assert glob_escape("a\\b") == "a\\\\b"
    assert glob_escape("*?") == "\\*\\?"
    assert RunKeys.scan_pattern("job[1]") == "job\\[1\\]:{*}:fence"


def test_runs_of_a_namespace_with_glob_characters_are_its_own(client: Any, spaces: list[str]) -> None:
    for ns in spaces:
        store = CheckpointStore(client, namespace=ns)
        with store.acquire("run-*?[x]\\", owner="w", ttl=10) as lease:  # glob characters in the run id too
            lease.commit({"ns": ns})
        store.acquire(f"only-{ns}", owner="w", ttl=10)
    for ns in spaces:
        store = CheckpointStore(client, namespace=ns)
        assert store.runs() == sorted(["run-*?[x]\\", f"only-{ns}"]), ns
        assert store.load("run-*?[x]\\").state == {"ns": ns}


def test_run_id_from_key_takes_only_keys_a_run_can_have() -> None:
    assert RunKeys.run_id_from_key("ns", "ns:{r-1}:fence") == "r-1"
    assert RunKeys.run_id_from_key("ns[1]", "ns1:{r}:fence") is None
    assert RunKeys.run_id_from_key("ns", "ns:{r}x:fence") is None  # not a name RunKeys builds
    assert RunKeys.run_id_from_key("ns", "ns:{}:fence") is None
    assert RunKeys.run_id_from_key("ns", "ns:{a b}:fence") is None  # a run id that does not validate
    assert RunKeys.run_id_from_key("ns", "ns:{unterminated") is None


def test_cli_verify_all_checks_the_runs_of_a_glob_namespace(client: Any, durable_server: Any,
                                                              spaces: list[str]) -> None:
    damaged_ns, shadow_ns = spaces[0], spaces[1]  # "<p>[1]" and "<p>1"
    with CheckpointStore(client, namespace=shadow_ns).acquire("shadow", owner="w", ttl=10) as lease:
        lease.commit({"i": 0})
    with CheckpointStore(client, namespace=damaged_ns).acquire("job", owner="w", ttl=10) as lease:
        for i in range(2):
            lease.commit({"i": i, "pad": "x" * 100})
    client.setrange(RunKeys(damaged_ns, "job").generation(2), 40, b"\xff\xfe")

    result = CliRunner().invoke(cli, ["verify", "--all", "--json", "--url", durable_server.url,
                                      "--namespace", damaged_ns])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["runs_checked"] == 1 and data["generations_checked"] == 2
    assert data["failures"] == [{"run": "job", "generation": 2, "reason": "checksum",
                                 "detail": "xxh3-128 digest does not match the content"}]

    listed = CliRunner().invoke(cli, ["runs", "--json", "--url", durable_server.url, "--namespace", damaged_ns])
    assert listed.exit_code == 0 and [r["run"] for r in json.loads(listed.stdout)["runs"]] == ["job"]
