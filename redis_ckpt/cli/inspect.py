"""The read-only commands: ``runs``, ``namespaces``, ``show``, ``fence`` (``--follow``), ``verify``.

Nothing here writes, and no migration runs: data a command cannot read is reported as
such (exit 1, naming the run), a listing going on with the next run.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import click

from .. import CheckpointError, RunInfo, StoreUnavailableError
from ..core.keys import RunKeys, validate_namespace
from ..core.store_core import StoreCore
from ..drivers.errors import reraise
from . import render, views
from .exits import EXIT_NO, CliFailure, NoSuchRun, show_notice
from .options import CliConfig, connection_options
from .reads import load_as_stored, read, run_info, try_read, usage_or_none

__all__ = ["runs", "namespaces", "show", "fence", "verify"]

T = TypeVar("T")

FOLLOW_POLL_S = 0.5
#: the status of a run whose data is gone, its fence left (``runs`` hides them unless --all;
#: ``namespaces`` does not count them)
TOMBSTONES = ("deleted", "expired")


# =========================================================================== runs


def _created_ms(info: RunInfo) -> int:
    v = render.as_int(info.head.get("created_ms"))
    return v if v is not None else -1


@click.command()
@connection_options
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N runs (after sorting).")
@click.option("--sort", "sort_by", type=click.Choice(["run", "age", "generation"]), default="run", show_default=True,
              help="run: by run id; age: most recently committed first; generation: highest first.")
@click.option("--reverse", is_flag=True, help="Reverse the order.")
@click.option("--all", "show_all", is_flag=True, help="Also list deleted and expired runs (only their fence is left).")
def runs(cfg: CliConfig, limit: int | None, sort_by: str, reverse: bool, show_all: bool) -> None:
    """List the runs of the namespace (found by SCAN).

    Generation, fence, holder and its token, lease time left, size and age of the last commit,
    the run's bytes on the server (generations, staging, events), and a total. Deleted and
    expired runs are left out unless --all.

    Example: redis-ckpt runs --namespace jobs --sort age --limit 20
    """
    counted = [0]  # the runs listed (tombstones left out unless --all), read one at a time
    unreadable: list[tuple[str, str]] = []

    def listed() -> Iterator[tuple[str, RunInfo | str]]:
        store = cfg.store
        for i in store.runs():
            v = try_read(cfg, i, store.info, i)
            if show_all or not (isinstance(v, RunInfo) and v.status in TOMBSTONES):
                counted[0] += 1
                yield i, v

    # only the runs shown are held (a heap of --limit): not every run's summary of the namespace
    if sort_by == "run":
        entries = _first(limit, listed(), key=lambda e: e[0], reverse=reverse)  # unreadable runs in place
    else:
        def readable() -> Iterator[tuple[str, RunInfo | str]]:
            for e in listed():
                if isinstance(e[1], str):
                    unreadable.append(e)
                else:
                    yield e

        def key(e: tuple[str, Any]) -> tuple[int, str]:
            return (-_created_ms(e[1]) if sort_by == "age" else -e[1].generation, e[0])

        entries = [*_first(limit, readable(), key=key, reverse=reverse), *sorted(unreadable)][:limit]  # unreadable last
    total = counted[0]
    usage = {i: usage_or_none(cfg, i) for i, e in entries if isinstance(e, RunInfo)}
    views.runs(cfg, sort_by=sort_by, reverse=reverse, total=total, entries=entries, usage=usage, show_all=show_all)
    bad = [(i, e) for i, e in entries if isinstance(e, str)]
    if bad:
        raise CliFailure(f"{len(bad)} run(s) could not be read: " + "; ".join(f"{i!r}: {e}" for i, e in bad),
                         EXIT_NO, secrets=cfg.secrets)


def _first(n: int | None, items: Iterable[T], *, key: Callable[[T], Any], reverse: bool) -> list[T]:
    """The first ``n`` of ``items`` in the order of ``key`` (all of them when ``n`` is None),
    holding no more than ``n`` at a time."""
    if n is None:
        return sorted(items, key=key, reverse=reverse)
    return (heapq.nlargest if reverse else heapq.nsmallest)(n, items, key=key)


# =========================================================================== namespaces


def _run_of_fence_key(key: str) -> tuple[str, str] | None:
    """(namespace, run) of a run's fence key (as :class:`RunKeys` builds it); None for any other key."""
    ns = key.partition(":{")[0]
    try:
        validate_namespace(ns)
    except CheckpointError:
        return None
    run = RunKeys.run_id_from_key(ns, key)
    return (ns, run) if run is not None and key == RunKeys(ns, run).fence else None


def _fence_keys(cfg: CliConfig) -> dict[str, set[str]]:
    """The runs of every namespace: every run's fence key found by SCAN on the store's client
    (every primary of a cluster), each request bounded by --timeout. Keys that are not a run's
    fence in a valid namespace are left out."""
    found: dict[str, set[str]] = {}  # a set: SCAN may return a key twice
    try:
        for raw in cfg.store.client.scan_iter(match="*:{*}:fence", count=1000):
            key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            got = _run_of_fence_key(key) if "\ufffd" not in key else None
            if got is not None:
                found.setdefault(got[0], set()).add(got[1])
    except Exception as exc:  # noqa: BLE001 - redis-py's errors become CheckpointErrors at the one seam
        reraise(exc, cfg.server)
    return found


def _namespace_counts(cfg: CliConfig) -> dict[str, int]:
    """Runs per namespace, counted as ``runs`` lists them: deleted and expired runs (only a
    fence left, a tombstone) are not counted, a run whose data cannot be read is. A namespace
    holding tombstones only is left out."""
    store = cfg.store
    counts: dict[str, int] = {}
    for ns, ids in _fence_keys(cfg).items():
        core = StoreCore(replace(store.core.config, namespace=ns))  # this namespace's keys, same deadline
        infos = (try_read(cfg, run, store.run, core.info_flow(run)) for run in ids)  # one at a time
        live = sum(1 for i in infos if not (isinstance(i, RunInfo) and i.status in TOMBSTONES))
        if live:
            counts[ns] = live
    return counts


@click.command()
@connection_options
def namespaces(cfg: CliConfig) -> None:
    """List the namespaces that hold runs on the server, with how many runs each (found by SCAN).

    Counted as `runs` lists them: deleted and expired runs (only their fence left) are not.
    The --namespace option is not used: use this to find the namespace your runs are in.

    Example: redis-ckpt namespaces
    """
    views.namespaces(cfg, _namespace_counts(cfg))


# =========================================================================== show


def _content(cfg: CliConfig, run: str) -> dict[str, Any] | None:
    """What the newest good generation holds, for runs written by redis_ckpt.steps or the
    LangGraph saver (None for any other state), read as stored whatever its schema: a
    state this CLI cannot read is simply not described."""
    from ..steps import describe  # on demand: the other commands start without the step runner

    try:
        ck = load_as_stored(cfg, run)
        if ck is None:
            return None
        status = describe(ck.state, run_id=run, generation=ck.generation)
        if status is not None:
            return {"kind": "step-runner", "generation": ck.generation, "steps": status.as_dict()}
        if isinstance(ck.state, dict) and ck.state.get("kind") == "langgraph-thread":
            return {"kind": "langgraph-thread", "generation": ck.generation, "thread_id": ck.state.get("thread_id"),
                    "writers": len(ck.state.get("epochs", ())), "last": ck.state.get("last")}
        return None
    except StoreUnavailableError:
        raise
    except Exception:  # noqa: BLE001 - the generations table already says what is wrong
        return None


@click.command()
@connection_options
@click.argument("run")
@click.option("--state", "show_state", is_flag=True,
              help="Print the state itself as JSON (values JSON cannot hold are tagged: {\"$datetime\": ...}).")
@click.option("--generation", "-g", type=click.IntRange(min=1), default=None,
              help="With --state: this kept generation [default: the newest that verifies].")
def show(cfg: CliConfig, run: str, show_state: bool, generation: int | None) -> None:
    """Head, kept generations (each verified), lease, fence and bytes of RUN.

    With --state, the state of the newest good generation (or --generation N) as JSON; a
    damaged generation prints its header, the reason and how far the frame verifies (exit 1).

    Example: redis-ckpt show job-42 --state --generation 3
    """
    from .lifecycle import show_state as state_of  # on demand, like _content's step runner

    if generation is not None and not show_state:
        raise click.UsageError("--generation goes with --state")
    info = run_info(cfg, run)
    if show_state:
        state_of(cfg, run, generation)
        return
    gens = read(cfg, run, cfg.store.generations, run)
    content = _content(cfg, run) if any(g.ok for g in gens) else None
    views.show(cfg, info, gens, content, usage_or_none(cfg, run))


# =========================================================================== fence


def _polls(deadline: float | None) -> Iterator[None]:
    """Yield every FOLLOW_POLL_S until ``deadline`` (monotonic; None: until Ctrl-C)."""
    while True:
        wait = FOLLOW_POLL_S
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wait = min(wait, left)
        time.sleep(wait)
        yield


def _wait_for_run(cfg: CliConfig, run: str, deadline: float | None) -> RunInfo | None:
    """Poll until ``run`` exists; None on Ctrl-C or past ``deadline``."""
    show_notice(f"waiting for run {run!r} to appear in namespace {cfg.namespace!r} on {cfg.server} "
                "(Ctrl-C to stop)")
    try:
        for _ in _polls(deadline):
            info = cfg.store.info(run)
            if info.exists:
                return info
    except KeyboardInterrupt:
        pass
    return None


def _follow(cfg: CliConfig, run: str, last_id: str | None, deadline: float | None) -> None:
    """Print the run's new events as they arrive, until Ctrl-C or ``deadline``."""
    try:
        for _ in _polls(deadline):
            for e in read(cfg, run, cfg.store.events, run, count=1000, after=last_id or "0-0"):
                last_id = e.id
                views.event(cfg, e)
    except KeyboardInterrupt:
        return


@click.command()
@connection_options
@click.argument("run")
@click.option("--count", "-c", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the newest events to show.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, hidden=True)
def fence(cfg: CliConfig, run: str, count: int, follow: bool, max_seconds: float | None) -> None:
    """Fencing inspection of RUN: fence, holder and token, lease expiry, recent events.

    Events are the run's audit stream: acquisitions, takeovers of expired leases, revokes,
    the commit that created the head (later commits are recorded by the head, not here),
    resent commits, conflicts, and every rejected stale write ("fenced": a token below the
    fence).
    With --follow, new events are printed as they arrive (with --json: JSON Lines, the
    first line the fence object, then one event object per line).

    With --follow, a run that does not exist yet is waited for (a line on stderr says so).

    Example: redis-ckpt fence job-42 --follow
    """
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        _fence(cfg, run, count, follow, deadline)
    except KeyboardInterrupt:
        if not follow:
            raise
        # Ctrl-C ends a follow with exit 0 whenever it comes: also between the first line and
        # the loop (it used to end as 'aborted', exit 1, there)


def _fence(cfg: CliConfig, run: str, count: int, follow: bool, deadline: float | None) -> None:
    try:
        info = run_info(cfg, run)
    except NoSuchRun:
        if not follow:
            raise
        waited = _wait_for_run(cfg, run, deadline)
        if waited is None:
            return  # Ctrl-C (or --max-seconds) before the run appeared
        info = waited
    events = read(cfg, run, cfg.store.events, run, count=count)
    views.fence(cfg, info, events, follow=follow)
    if follow:
        _follow(cfg, run, events[-1].id if events else None, deadline)


# =========================================================================== verify


@click.command()
@connection_options
@click.argument("run", required=False)
@click.option("--all", "all_runs", is_flag=True, help="Verify every run of the namespace.")
def verify(cfg: CliConfig, run: str | None, all_runs: bool) -> None:
    """Check the frame and checksum of every kept generation of RUN (or --all runs).

    No migration runs and nothing is written. Exit 1 if any generation fails,
    naming it and the reason.

    Example: redis-ckpt verify --all
    """
    if (run is None) == (not all_runs):
        raise click.UsageError("give either a RUN or --all")
    store = cfg.store
    if all_runs:
        ids = sorted(store.runs())
    else:
        assert run is not None
        run_info(cfg, run)
        ids = [run]
    view = views.Verify(cfg, ids)
    for i in ids:  # one run at a time, printed as it is checked
        gens = try_read(cfg, i, store.generations, i)
        info = None if isinstance(gens, str) else try_read(cfg, i, store.info, i)
        view.run(i, gens, info.staged_bytes if isinstance(info, RunInfo) else 0)
    view.end()
    failures, unreadable = view.failures, [i for i, _ in view.unreadable]
    if failures or unreadable:
        named = "; ".join([*(f"run {i!r} g{g.generation}: {g.reason}" for i, g in failures),
                           *(f"run {i!r}: unreadable" for i in unreadable)])
        what = f"{len(failures)} damaged generation(s)" + (f", {len(unreadable)} unreadable run(s)" if unreadable else "")
        raise CliFailure(f"{what}: {named}", EXIT_NO, secrets=cfg.secrets)
