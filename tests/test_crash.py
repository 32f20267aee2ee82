"""kill -9 of the server during a commit storm from several processes, restart from its AOF:
every acknowledged commit is there (or superseded by a newer one), every kept generation
verifies, no fence went backwards, no generation number was reused."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redis_ckpt import CheckpointStore

pytestmark = [pytest.mark.server, pytest.mark.slow]

WORKERS = 3
ROUNDS = 2
ROOT = Path(__file__).resolve().parent.parent


def read_acks(path: Path) -> list[tuple[int, int, int]]:
    if not path.exists():
        return []
    return [tuple(int(x) for x in line.split()) for line in path.read_text().splitlines() if line.strip()]  # type: ignore[misc]


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_nothing_acknowledged_is_lost_across_kill_9(engine, make_server, tmp_path):
    server = make_server(engine, appendonly="yes", appendfsync="always")
    runs = [f"storm-{i}" for i in range(WORKERS)]
    acks = {r: tmp_path / f"{r}.acks" for r in runs}
    highest_token = {r: 0 for r in runs}
    highest_generation = {r: 0 for r in runs}
    for round_ in range(ROUNDS):
        before = {r: len(read_acks(acks[r])) for r in runs}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.workers.commit_storm", server.url, "storm", r, str(acks[r])],
                cwd=ROOT, stderr=subprocess.PIPE, text=True,
            )
            for r in runs
        ]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and min(len(read_acks(acks[r])) - before[r] for r in runs) < 20:
            time.sleep(0.05)
        assert all(len(read_acks(acks[r])) - before[r] >= 20 for r in runs), f"round {round_}: workers stalled"
        time.sleep(random.uniform(0.05, 0.3))  # land the kill at a random point of the storm
        server.kill()
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        server.restart()

        store = CheckpointStore(server.client(), namespace="storm", keep=3)
        for r in runs:
            acked = read_acks(acks[r])
            assert len(acked) > before[r], f"worker of {r} acknowledged nothing in round {round_}"
            info = store.info(r)
            last_gen, last_token, last_step = acked[-1]
            assert info.generation >= last_gen, "an acknowledged commit was lost"
            assert info.fence >= last_token >= highest_token[r], "a fence went backwards"
            gens = store.generations(r)
            assert gens and all(g.ok for g in gens), [(g.generation, g.reason) for g in gens if not g.ok]
            by_gen = {}
            for g, token, step in acked:
                by_gen.setdefault(g, []).append((token, step))
            assert all(len(v) == 1 for v in by_gen.values()), "a generation number was acknowledged twice"
            ck = store.load(r)
            assert ck.generation == info.generation and not ck.skipped
            assert ck.state["step"] >= last_step
            if ck.generation == last_gen:
                assert ck.state["step"] == last_step
            highest_token[r] = info.fence
            assert info.generation >= highest_generation[r]
            highest_generation[r] = info.generation
        store.close()
