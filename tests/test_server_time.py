"""Commit times come from the server (TIME in the commit script), not the writer's clock:
a worker whose clock is skewed cannot reorder the generation list or ``runs --sort age``."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from redis_ckpt.core.flows import commit as _commit
from redis_ckpt.models import ms_to_datetime
from redis_ckpt.cli import cli

pytestmark = pytest.mark.server
DAY_MS = 86_400_000


def server_now(client) -> datetime:
    sec, usec = client.time()
    return datetime.fromtimestamp(sec + usec / 1e6, tz=timezone.utc)


def skewed(monkeypatch, offset_ms: int) -> None:
    real = time.time_ns
    monkeypatch.setattr(_commit, "now_ms", lambda: real() // 1_000_000 + offset_ms)


def test_generation_times_follow_commit_order_whatever_the_writers_clock(store, client, monkeypatch):
    lease = store.acquire("r", owner="w", ttl=30)
    lease.commit({"i": 1})
    skewed(monkeypatch, -DAY_MS)  # this worker's clock is a day behind
    t0 = server_now(client)
    lease.commit({"i": 2})
    t1 = server_now(client)
    skewed(monkeypatch, +DAY_MS)  # and now a day ahead
    lease.commit({"i": 3})
    gens = store.generations("r")
    assert [g.generation for g in gens] == [3, 2, 1]
    times = [g.created_at for g in gens]
    assert times[0] >= times[1] >= times[2]
    assert t0 - timedelta(seconds=1) <= gens[1].created_at <= t1 + timedelta(seconds=1)
    ck = store.load("r")
    assert ck.created_at == gens[0].created_at
    head_ms = int(store.info("r").head["created_ms"])
    assert ms_to_datetime(head_ms) == gens[0].created_at


def test_runs_sort_by_age_follows_commit_order_with_a_skewed_writer(store, client, monkeypatch, durable_server, namespace):
    store.acquire("first", owner="w", ttl=30).commit({"n": 1})
    time.sleep(0.01)
    skewed(monkeypatch, -DAY_MS)
    store.acquire("second", owner="w", ttl=30).commit({"n": 2})  # later, from a slow clock
    out = CliRunner().invoke(cli, ["runs", "--sort", "age", "--json", "--url", durable_server.url,
                                   "--namespace", namespace])
    assert out.exit_code == 0, out.output
    runs = [r["run"] for r in json.loads(out.stdout)["runs"]]
    assert runs == ["second", "first"]
    ages = {r["run"]: r["head"]["age_ms"] for r in json.loads(out.stdout)["runs"]}
    assert ages["second"] < 60_000  # not a day old
