"""The admin CLI on a store that has run for months: output piped into ``head``, and listings
whose memory does not grow with the number of runs where only a few are shown."""

from __future__ import annotations

import os
import subprocess
import sys
import weakref
from typing import Any

import pytest

from redis_ckpt import CheckpointStore, RunInfo, StoreUnavailableError
from redis_ckpt.core.ops import Flow
from redis_ckpt.core.store_core import StoreCore

from test_cli import as_json, invoke

pytestmark = pytest.mark.server


def committed(store: CheckpointStore, *runs: str) -> None:
    for run in runs:
        with store.acquire(run, owner="w", ttl=30) as lease:
            lease.commit({"run": run})


@pytest.mark.parametrize("args", [["runs"], ["verify", "--all"], ["fence", "r-0", "--json"]])
def test_output_piped_into_a_reader_that_stops_early(store: CheckpointStore, durable_server: Any, namespace: str,
                                                    args: list[str]) -> None:
    """`redis-ckpt runs | head -1`: head closes the pipe; the command stops quietly, as a
    program killed by SIGPIPE does (exit 141), never an "unexpected error, a bug" line."""
    committed(store, "r-0", "r-1")
    env = {**os.environ, "REDIS_CKPT_URL": durable_server.url, "REDIS_CKPT_NAMESPACE": namespace}
    proc = subprocess.Popen([sys.executable, "-m", "redis_ckpt.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command prints its first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    proc.stderr.close()
    # only the probe's warnings (on Redis), as text or, with --json, as JSON
    assert all(line.startswith(("warning: ", '{"warning": ')) for line in err.splitlines()), err


@pytest.fixture
def summaries_held(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[the most run summaries (RunInfo) alive at once]: what a listing holds in memory, one
    summary a run it read. Counted as each is made."""
    live, peak = [0], [0]

    def gone() -> None:
        live[0] -= 1
    made = StoreCore.info_flow

    def info_flow(self: StoreCore, run_id: str) -> Flow[RunInfo]:
        info = yield from made(self, run_id)
        live[0] += 1
        weakref.finalize(info, gone)
        peak[0] = max(peak[0], live[0])
        return info

    monkeypatch.setattr(StoreCore, "info_flow", info_flow)
    return peak


@pytest.mark.parametrize("sort", ["run", "age", "generation"])
def test_runs_with_a_limit_holds_the_runs_it_shows_not_all(store: CheckpointStore, durable_server: Any,
                                                          namespace: str, summaries_held: list[int],
                                                          sort: str) -> None:
    """`runs --limit 2` on a namespace of many runs: the memory it needs is that of the runs it
    shows, not of every run of the namespace (which reached gigabytes at a million runs)."""
    committed(store, *(f"r-{i:02d}" for i in range(12)))
    store.delete("r-05")  # a tombstone: not counted
    result = invoke(["runs", "--limit", "2", "--sort", sort, "--reverse", "--json"], url=durable_server.url,
                    namespace=namespace)
    assert result.exit_code == 0, result.stderr
    data = as_json(result)
    expected = {"run": ["r-11", "r-10"], "age": ["r-00", "r-01"], "generation": ["r-11", "r-10"]}[sort]
    assert [e["run"] for e in data["runs"]] == expected and data["total"] == 11
    assert summaries_held[0] <= 5  # the two shown and the few being compared: not all 12


def test_namespaces_counts_without_holding_every_run(store: CheckpointStore, durable_server: Any, namespace: str,
                                                     summaries_held: list[int]) -> None:
    committed(store, *(f"r-{i:02d}" for i in range(12)))
    store.delete("r-05")
    result = invoke(["namespaces", "--json"], url=durable_server.url)
    assert result.exit_code == 0, result.stderr
    assert {"namespace": namespace, "runs": 11} in as_json(result)["namespaces"]
    assert summaries_held[0] <= 2


def test_verify_all_prints_each_run_as_it_is_checked(store: CheckpointStore, durable_server: Any, namespace: str,
                                                     summaries_held: list[int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`verify --all` on a namespace of many runs: each run's rows are printed as it is checked
    (minutes of silence otherwise, and every run's generations held until the end)."""
    import click

    runs = [f"r-{i:02d}" for i in range(12)]
    committed(store, *runs)
    seen: list[tuple[str, str]] = []
    checked, echo = CheckpointStore.generations, click.echo

    def generations(self: CheckpointStore, run_id: str) -> Any:
        seen.append(("checked", run_id))
        return checked(self, run_id)

    def echoed(message: Any = None, *args: Any, **kwargs: Any) -> None:
        seen.append(("printed", str(message)))
        echo(message, *args, **kwargs)

    monkeypatch.setattr(CheckpointStore, "generations", generations)
    monkeypatch.setattr(click, "echo", echoed)
    result = invoke(["verify", "--all"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RUN", "GEN", "STATUS", "REASON"]
    assert [li.split() for li in lines[1:-1]] == [[run, "1", "ok", "-"] for run in runs]
    assert lines[-1] == "12 generation(s) of 12 run(s) checked, 0 damaged"
    first_row = next(n for n, (what, text) in enumerate(seen) if what == "printed" and "r-00" in text)
    assert first_row < seen.index(("checked", "r-11"))
    assert summaries_held[0] <= 2


def test_prune_that_fails_half_way_has_said_what_it_removed(store: CheckpointStore, durable_server: Any,
                                                           namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`prune` prints each run as it removes it: when the server goes away half way through a
    long prune, the runs already removed have been named (they were not, the table came at the
    end)."""
    committed(store, "r-0", "r-1", "r-2")
    one_run = StoreCore.prune_run_flow

    def prune_run_flow(self: StoreCore, run_id: str, **kw: Any) -> Flow[Any]:
        if run_id == "r-2":
            raise StoreUnavailableError("the server went away", run_id=run_id)
        return one_run(self, run_id, **kw)

    monkeypatch.setattr(StoreCore, "prune_run_flow", prune_run_flow)
    result = invoke(["prune", "--idle", "1ms", "--yes"], url=durable_server.url, namespace=namespace)
    assert result.exit_code == 2
    assert [li.split()[0] for li in result.stdout.splitlines()] == ["RUN", "r-0", "r-1"]
    assert store.info("r-1").status == "deleted" and store.info("r-2").status == "committed"
