"""The bench's own helpers (bench/*.py): every module imports, and the pieces that decide
what the bench prints (round statistics, verdicts, the RESP command counter, the
message-shaped state) do what the report says. No timing is asserted here: the bench's
quick mode takes longer than a test should (it starts Valkey and PostgreSQL), so it is
run by hand (`python bench/compare.py --quick`)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import redis

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

MODULES = ["_harness", "states", "peers", "commits", "costs", "reads", "langgraph_savers", "compare",
           "large_state", "durability_costs", "incremental", "incremental_saver"]


@pytest.mark.parametrize("name", MODULES)
def test_every_bench_module_imports(name: str) -> None:
    assert importlib.import_module(name).__doc__


def test_modules_stay_readable() -> None:
    for name in MODULES:
        assert len((BENCH / f"{name}.py").read_text().splitlines()) <= 400, name


def test_ratio_is_the_median_of_per_round_ratios() -> None:
    from _harness import Result, Series, ops_ratio, ratio

    r = ratio([10, 20, 30], [10, 10, 10])
    assert (r.median, r.low, r.high) == (2.0, 1.0, 3.0)
    assert r.spread == "2.00 (1.00-3.00)"
    a, b = Series("a"), Series("b")
    for ops_a, ops_b in ((100, 200), (300, 200), (50, 100)):
        a.rounds.append(Result([1 / ops_a] * ops_a, 1.0))
        b.rounds.append(Result([1 / ops_b] * ops_b, 1.0))
    assert ops_ratio(a, b).median == 0.5  # rounds 0.5, 1.5, 0.5: not 450/500


def test_worst_cell_decides_the_verdict() -> None:
    from _harness import worst

    t = worst("x", [0.95, 0.85, 1.2], 0.9)
    assert t is not None and t.value == 0.85 and t.verdict == "missed"
    t = worst("p50 <= 1.25x", [1.1, 1.2], 1.25, higher_is_better=False)
    assert t is not None and t.value == 1.2 and t.verdict == "held"
    assert worst("none", [], 1.0) is None


def test_interleaved_rounds_alternate_the_order() -> None:
    import asyncio

    from _harness import Contender, interleave

    calls: list[str] = []

    async def b() -> None:
        calls.append("b")

    contenders = [Contender("a", [lambda: calls.append("a")]), Contender("b", [b], is_async=True)]
    loop = asyncio.new_event_loop()
    try:
        out = interleave(loop, contenders, rounds=2, seconds=0.0, max_ops=1)
    finally:
        loop.close()
    assert calls == ["a", "b", "a", "b", "b", "a"]  # warm-up, round 0 (a b), round 1 (b a)
    assert [len(s.rounds) for s in out.values()] == [2, 2]


def test_command_names_read_what_redis_py_packs() -> None:
    from costs import command_names

    conn = redis.Connection()
    packed = conn.pack_commands([("EVALSHA", "ab" * 20, 1, "k", b"\x00" * 20000), ("WAITAOF", 1, 0, 5000),
                                 ("CONFIG", "GET", "appendfsync")])
    assert command_names(packed) == ["evalsha", "waitaof", "config|get"]


def test_message_state_is_deterministic_message_shaped_and_round_trips() -> None:
    import msgpack
    from states import message_history, message_state

    from redis_ckpt.core.codec import decode_state, encode_state

    state = message_state()
    assert state == message_state() and state != message_state(seed=99)
    assert len(state["messages"]) == 2000
    assert 0.5 <= len(msgpack.packb(state)) / 2**20 <= 1.0
    roles = {m["role"] for m in state["messages"]}
    assert roles == {"user", "assistant", "tool"}
    assert any(m.get("tool_calls") for m in state["messages"])
    assert decode_state(encode_state(state)) == state
    history = message_history(50 * 1024)
    assert 50 * 1024 <= len(msgpack.packb(history)) < 60 * 1024


def test_postgres_peer_says_why_it_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    import _harness

    monkeypatch.setattr(_harness, "postgres_bindir", lambda: None)
    pg = _harness.Postgres().start()
    assert pg.skip_reason and "initdb" in pg.skip_reason
    assert pg.describe().startswith("PostgreSQL not measured:")
    pg.stop()


def test_readme_blocks_are_filled_from_the_run_and_nothing_else_changes(tmp_path: Path) -> None:
    from _harness import replace_block

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:summary -->\nold figures\n<!-- /bench:summary -->\noutro\n")
    replace_block(readme, "summary", ["| target | 0.91x | held |"])
    assert readme.read_text() == "intro\n<!-- bench:summary -->\n| target | 0.91x | held |\n<!-- /bench:summary -->\noutro\n"
    with pytest.raises(SystemExit, match="bench:langgraph"):
        replace_block(readme, "langgraph", ["x"])


def test_the_readme_has_both_bench_blocks() -> None:
    text = (BENCH.parent / "README.md").read_text()
    for name in ("summary", "langgraph"):
        assert f"<!-- bench:{name} -->" in text and f"<!-- /bench:{name} -->" in text


def test_a_borderline_cell_is_judged_on_both_runs_rounds() -> None:
    from _harness import Result, Series
    from commits import Cell, borderline, merged

    def cell(store_ops: list[int]) -> Cell:
        series = {}
        for mode in ("threads", "asyncio"):
            for name, ops in (("floor", [100] * len(store_ops)), ("store", store_ops)):
                series[f"{mode} {name}"] = Series(f"{mode} {name}", [Result([1 / n] * n, 1.0) for n in ops])
        return Cell("1 KiB", 8, series)

    steady = cell([95, 96, 97])
    assert not borderline(steady)
    shaky = cell([60, 95, 70])  # one round above 0.9x, two below
    assert borderline(shaky)
    both = merged(shaky, cell([92, 93, 94]))
    assert both.runs == 2 and both.shown == "1 KiB *"
    assert len(both.get("threads", "store").rounds) == 6  # type: ignore[union-attr]
