"""What each command prints: one JSON object with ``--json`` (the README's "--json" section
lists the keys), else aligned text. A command parses, calls the store, and hands what it got
to its view here; the building blocks (tables, durations, model -> JSON) are in
:mod:`~redis_ckpt.cli.render`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from .. import Durability, Event, Finding, GenerationInfo, ProbeReport, RunInfo, RunUsage
from . import render as r

if TYPE_CHECKING:
    from .options import CliConfig

__all__ = ["base", "holder", "check", "runs", "namespaces", "show", "fence", "event", "Verify", "revoke", "delete",
           "exported", "imported"]


def base(cfg: CliConfig) -> dict[str, Any]:
    """The keys every JSON document of a command on one namespace starts with."""
    return {"server": cfg.server, "namespace": cfg.namespace}


# --------------------------------------------------------------------------- check


def _finding_rows(findings: Sequence[Finding]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for f in findings:
        rows.append([f.level, f.check, f.message])
        if f.remedy and f.level != "ok":
            rows.append(["", "", f"remedy: {f.remedy}"])
    return rows


def _findings_json(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    return [{"check": f.check, "level": f.level, "message": f.message, "remedy": f.remedy} for f in findings]


def check(cfg: CliConfig, *, policy: Durability, declared: Mapping[str, str], verdict: str, exit_code: int,
          nodes: Sequence[tuple[ProbeReport, str]], topology: Sequence[Finding] = ()) -> None:
    """The probe's findings, per probed primary (``nodes``: each report with its verdict), and
    those on a Cluster's or Sentinel's topology as a whole."""
    if cfg.as_json:
        r.emit_json({
            **base(cfg),
            "policy": {"label": policy.label, "replicas": policy.replicas,
                       "replica_fsync": policy.replica_fsync, "timeout_ms": policy.timeout_ms},
            "declared": dict(declared),
            "verdict": verdict,
            "exit_code": exit_code,
            "topology": _findings_json(topology),
            "nodes": [{
                "server": n.server, "engine": n.engine, "version": n.version,
                "verdict": v,
                "findings": _findings_json(n.findings),
            } for n, v in nodes],
        })
        return
    warnings = sum(1 for f in (*topology, *(f for n, _ in nodes for f in n.findings)) if f.level == "warn")
    summary = verdict.upper() if verdict != "durable" else "durable"
    if warnings:
        summary += f" ({warnings} warning{'s' if warnings != 1 else ''})"
    head = [("server", cfg.server), ("namespace", cfg.namespace), ("policy", policy.label)]
    if len(nodes) == 1:
        only = nodes[0][0]
        head.append(("engine", f"{only.engine} {only.version or '?'}"))
    head.append(("verdict", summary))
    click.echo(r.keyvalues(head))
    if topology:
        click.echo()
        click.echo("topology")
        click.echo(r.table(["LEVEL", "CHECK", "FINDING"], _finding_rows(topology)))
    for n, v in nodes:
        click.echo()
        if len(nodes) > 1:
            click.echo(f"node {n.server} ({n.engine} {n.version or '?'}): {v}")
        click.echo(r.table(["LEVEL", "CHECK", "FINDING"], _finding_rows(n.findings)))


# --------------------------------------------------------------------------- runs, namespaces


def _lease_cell(info: RunInfo) -> str | None:
    if info.lease_state == "held" and info.lease_ms_left is not None:
        return f"{r.duration(info.lease_ms_left)} left"
    return info.lease_state


def runs(cfg: CliConfig, *, sort_by: str, reverse: bool, total: int,
         entries: Sequence[tuple[str, RunInfo | str]], usage: Mapping[str, RunUsage | None], show_all: bool) -> None:
    """The listed runs, in order: each its summary and bytes (``usage``; None: MEMORY USAGE
    not allowed), or why it cannot be read; and the bytes of them all."""
    now = r.now_ms()
    known = [u for u in usage.values() if u is not None]
    all_bytes = sum(u.total for u in known) if known or not usage else None
    if cfg.as_json:
        r.emit_json({**base(cfg), "sort": sort_by, "reverse": reverse, "total": total, "all": show_all,
                     "bytes_total": all_bytes,
                     "runs": [{**r.run_json(e, now), "status": e.status, "bytes": r.usage_json(usage.get(i))}
                              if isinstance(e, RunInfo) else {"run": i, "error": e}
                              for i, e in entries]})
        return
    if not entries:
        click.echo(f"no runs in namespace {cfg.namespace!r} on {cfg.server}")
        return
    rows = []
    for i, e in entries:
        if not isinstance(e, RunInfo):
            rows.append([i, "?", "?", None, None, None, None, f"UNREADABLE: {e}"])
            continue
        h = r.head_json(e, now) or {}
        held = e.lease_state == "held"
        u = usage.get(i)
        rows.append([e.run_id if e.status == "committed" else f"{e.run_id} ({e.status})", e.generation, e.fence,
                     e.lease_owner if held else None, e.lease_token if held else None, _lease_cell(e),
                     r.size(h.get("size")), r.age(h.get("age_ms")), None if u is None else r.size(u.total),
                     None if u is None else f"{r.size(u.generations)}/{r.size(u.staging)}/{r.size(u.events)}"])
    click.echo(r.table(["RUN", "GEN", "FENCE", "HOLDER", "TOKEN", "LEASE", "SIZE", "LAST COMMIT", "BYTES",
                        "GENS/STAGED/EVENTS"], rows))
    if len(entries) < total:
        click.echo(f"({len(entries)} of {total} runs shown)")
    if all_bytes is not None:
        click.echo(f"total: {r.size(all_bytes)} in {len(known)} run(s)")


def namespaces(cfg: CliConfig, counts: Mapping[str, int]) -> None:
    rows = sorted(counts.items())
    if cfg.as_json:
        r.emit_json({"server": cfg.server, "namespaces": [{"namespace": ns, "runs": n} for ns, n in rows]})
    elif not rows:
        click.echo(f"no runs in any namespace on {cfg.server}")
    else:
        click.echo(r.table(["NAMESPACE", "RUNS"], [[ns, n] for ns, n in rows]))


# --------------------------------------------------------------------------- show


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


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _content_text(content: Mapping[str, Any]) -> None:
    """What a step runner's or a LangGraph thread's newest good generation holds."""
    if content["kind"] == "step-runner":
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
    elif content["kind"] == "langgraph-thread":
        click.echo()
        click.echo(f"langgraph thread {content['thread_id']!r}: {content['writers']} writer(s) committed")


def show(cfg: CliConfig, info: RunInfo, gens: Sequence[GenerationInfo], content: Mapping[str, Any] | None,
         usage: RunUsage | None) -> None:
    """Head, lease, fence, expiry, bytes, every kept generation (verified), and what the state
    holds when a step runner or the LangGraph saver wrote it (``content``)."""
    now = r.now_ms()
    if cfg.as_json:
        r.emit_json({**base(cfg), **r.run_json(info, now), "status": info.status,
                     "expires_ms": info.expires_ms_left, "fence_expires_ms": info.fence_ms_left,
                     "generations": [r.generation_json(g) for g in gens],
                     "staged": {"commits": info.staged_commits, "bytes": info.staged_bytes},
                     "bytes": r.usage_json(usage), "content": r.jsonable(content)})
        return
    expiry = f"in {r.duration(info.expires_ms_left)} unless committed to or acquired" \
        if info.expires_ms_left is not None else "never (no retention)"
    click.echo(r.keyvalues([
        ("run", info.run_id), ("namespace", cfg.namespace), ("status", info.status), ("fence", info.fence),
        ("head", _head_text(info, now)), ("lease", r.lease_text(info, now)),
        ("kept", ", ".join(f"g{g}" for g in info.kept) or "none"),
        ("staged", _staged_text(info)), ("bytes", r.usage_text(usage)), ("expires", expiry),
    ]))
    if gens:
        click.echo()
        click.echo(r.table(["GEN", "STATUS", "SIZE", "TOKEN", "OWNER", "CREATED", "CHECKSUM", "REASON"],
                           _generation_rows(gens)))
    if content is not None:
        _content_text(content)


# --------------------------------------------------------------------------- fence


def _event_line(e: Event) -> str:
    return r.printable(f"{r.iso(e.at) or '-':<24}  {e.kind:<12}  {r.event_details(e)}")


def fence(cfg: CliConfig, info: RunInfo, events: Sequence[Event], *, follow: bool) -> None:
    """Fence, holder and the newest audit events (with ``follow``, the JSON is the first line
    of JSON Lines: one :func:`event` line follows for each new event)."""
    now = r.now_ms()
    rejected = [e for e in events if e.kind == "fenced"]
    if cfg.as_json:
        r.emit_json({
            **base(cfg), "run": info.run_id, "fence": info.fence, "generation": info.generation,
            "lease": r.lease_json(info, now),
            "events": [r.event_json(e) for e in events],
            "rejected": [r.rejected_json(e) for e in rejected],
        }, compact=follow)
        return
    click.echo(r.keyvalues([
        ("run", info.run_id), ("fence", info.fence),
        ("holder", r.lease_text(info, now)),
        ("rejected", f"{len(rejected)} stale write(s) among the {len(events)} newest events"),
    ]))
    click.echo()
    click.echo(f"{'AT':<24}  {'KIND':<12}  DETAILS")
    for e in events:
        click.echo(_event_line(e))


def event(cfg: CliConfig, e: Event) -> None:
    """One new event of ``fence --follow``: a JSON line, or a text line."""
    if cfg.as_json:
        r.emit_json(r.event_json(e), compact=True)
    else:
        click.echo(_event_line(e))


# --------------------------------------------------------------------------- verify


class Verify:
    """``verify``'s output as the runs are checked: with text, each run's rows printed as soon as
    it is read (columns sized to the run ids; a generation number past 5 digits pushes the rest
    of its own line), then the summary and the bytes staged by commits whose script has not run;
    with --json, one object at the end. What is kept meanwhile is the figures and the failures,
    not the runs' generations."""

    HEADERS = ("RUN", "GEN", "STATUS", "REASON")

    def __init__(self, cfg: CliConfig, ids: Sequence[str]) -> None:
        self.cfg = cfg
        self.widths = [max(len("RUN"), *(len(r.printable(i)) for i in ids)), 5, len("no generations")]
        self.runs = self.checked = 0
        self.failures: list[tuple[str, GenerationInfo]] = []
        self.unreadable: list[tuple[str, str]] = []
        self.staged: dict[str, int] = {}
        self.json_runs: list[dict[str, Any]] = []

    def run(self, run_id: str, gens: Sequence[GenerationInfo] | str, staged: int) -> None:
        """One run checked: its generations (or why it cannot be read) and its staged bytes."""
        first = self.runs == 0
        self.runs += 1
        if isinstance(gens, str):
            self.unreadable.append((run_id, gens))
            rows: list[list[Any]] = [[run_id, None, "UNREADABLE", gens]]
        else:
            self.checked += len(gens)
            self.failures += [(run_id, g) for g in gens if not g.ok]
            if staged:
                self.staged[run_id] = staged
            rows = [[run_id, g.generation, "ok" if g.ok else "DAMAGED", None if g.ok else f"{g.reason}: {g.detail}"]
                    for g in gens] or [[run_id, None, "no generations", None]]
        if self.cfg.as_json:
            self.json_runs.append(
                {"run": run_id, "ok": False, "error": gens, "generations": []} if isinstance(gens, str) else
                {"run": run_id, "ok": all(g.ok for g in gens), "staged_bytes": staged,
                 "generations": [{"generation": g.generation, "ok": g.ok, "reason": g.reason, "detail": g.detail,
                                  "size": g.size, "checksum": g.checksum} for g in gens]})
            return
        lines = [r.line(row, self.widths) for row in rows]
        click.echo("\n".join([r.line(self.HEADERS, self.widths), *lines] if first else lines))

    def end(self) -> None:
        """The summary, once every run is checked."""
        failures, unreadable = self.failures, self.unreadable
        if self.cfg.as_json:
            r.emit_json({
                **base(self.cfg), "ok": not failures and not unreadable, "runs_checked": self.runs,
                "generations_checked": self.checked,
                "failures": [{"run": i, "generation": g.generation, "reason": g.reason, "detail": g.detail}
                             for i, g in failures]
                + [{"run": i, "generation": None, "reason": "unreadable", "detail": why} for i, why in unreadable],
                "staged_bytes": sum(self.staged.values()),
                "runs": self.json_runs,
            })
            return
        extra = f", {len(unreadable)} run(s) unreadable" if unreadable else ""
        click.echo(f"{self.checked} generation(s) of {self.runs} run(s) checked, {len(failures)} damaged{extra}")
        if self.staged:
            click.echo("staged data of commits whose script has not run: "
                       + ", ".join(f"{i}: {r.size(n)}" for i, n in self.staged.items()))


# --------------------------------------------------------------------------- revoke, delete, export, import


def holder(info: RunInfo) -> str:
    """Who holds the run's lease now, for a confirmation question and the result line."""
    if info.lease_state == "held" and info.lease_ms_left is not None:
        return f"{info.lease_owner} (token {info.lease_token})"
    return "no live holder"


def revoke(cfg: CliConfig, info: RunInfo, fence: int, by: str) -> None:
    """``info``: the run before the revoke; ``fence``: the fence now."""
    held = info.lease_state == "held" and info.lease_ms_left is not None
    if cfg.as_json:
        r.emit_json({**base(cfg), "run": info.run_id, "fence": fence, "previous_fence": info.fence,
                     "previous_holder": {"owner": info.lease_owner, "token": info.lease_token} if held else None,
                     "by": by})
    else:
        click.echo(f"revoked run {info.run_id!r}: fence {info.fence} -> {fence}; {holder(info)} is fenced off")


def delete(cfg: CliConfig, info: RunInfo, deleted: int, fence: int, by: str) -> None:
    """``info``: the run before the delete; ``fence``: the fence now (kept as a tombstone)."""
    if cfg.as_json:
        r.emit_json({**base(cfg), "run": info.run_id, "deleted_generations": deleted, "fence": fence,
                     "previous_fence": info.fence, "by": by})
    else:
        click.echo(f"deleted run {info.run_id!r}: {deleted} generation(s); fence {info.fence} -> {fence} "
                   "kept as a tombstone")


def exported(cfg: CliConfig, frame: Mapping[str, Any], *, output: str) -> None:
    """``frame``: run, generation, token, owner, size, checksum of the frame written to ``output``."""
    if cfg.as_json:
        r.emit_json({**base(cfg), **frame, "file": output})
    else:
        where = "stdout" if output == "-" else output
        click.echo(f"exported run {frame['run']!r} generation {frame['generation']} (token {frame['token']}, "
                   f"{r.size(frame['size'])}, checksum {frame['checksum']}) to {where}", err=output == "-")


def imported(cfg: CliConfig, frame: Mapping[str, Any], *, fence: int, file: str) -> None:
    """``frame``: run, generation, token, owner, size, checksum of the frame imported from ``file``."""
    if cfg.as_json:
        r.emit_json({**base(cfg), **frame, "fence": fence, "file": file if file != "<stdin>" else "-"})
    else:
        click.echo(f"imported run {frame['run']!r} generation {frame['generation']} (token {frame['token']}, "
                   f"{r.size(frame['size'])}) into namespace {cfg.namespace!r}; fence {fence}")
