"""The lifecycle commands: ``fork``, ``prune``, and ``show --state`` (the state of a kept
generation as JSON, or how far a damaged one verifies; :mod:`~redis_ckpt.cli.state` makes the
JSON). Each prints its own output: what they print is theirs alone."""

from __future__ import annotations

import json
import re
from typing import Any

import click

from ..core.frame.damage import frame_report
from ..errors import FrameError
from ..models import PrunedRun
from . import render as r
from .exits import EXIT_NO, CliFailure
from .options import CliConfig, by_or_default, connection_options
from .reads import load_as_stored, try_read
from .state import tagged
from .views import base

__all__ = ["parse_duration_ms", "show_state", "fork", "prune"]

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")


def parse_duration_ms(text: str) -> int:
    """``7d``, ``12h``, ``30m``, ``45s``, ``500ms``, ``1.5h``, a bare number of seconds; > 0."""
    m = _DURATION.fullmatch(text.strip().lower())
    ms = round(float(m[1]) * _UNITS[m[2] or "s"]) if m else 0
    if ms <= 0:
        raise click.BadParameter(f"{text!r} is not a positive duration (e.g. 7d, 12h, 30m, 90s, 500ms)")
    return ms


class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        return value if isinstance(value, int) else parse_duration_ms(str(value))


# --------------------------------------------------------------------------- show --state


def show_state(cfg: CliConfig, run: str, generation: int | None) -> None:
    """``show RUN --state [--generation N]``: the state as JSON, or why it cannot be read."""
    store = cfg.store
    head = {**base(cfg), "run": run}
    try:
        ck = load_as_stored(cfg, run, generation)
    except FrameError as bad:
        g = bad.generation if bad.generation is not None else generation
        try:
            blob: bytes | None = store.run(store.core.stored_frame_flow(run, g))
        except FrameError:
            blob = None
        report = frame_report(blob, bad)
        if cfg.as_json:
            r.emit_json({**head, "generation": g, "ok": False, "damage": report})
        else:
            click.echo(r.keyvalues([
                ("run", run), ("generation", g), ("damaged", f"{report['reason']}: {report['detail']}"),
                ("verified", ", ".join(report["verified"]) or "nothing"), ("failed at", report["failed"]),
                ("size", r.size(report["size"]) if report["size"] is not None else "-"),
            ]))
            header = report["header"]
            if header is not None:
                click.echo()
                trust = "verified" if header["verified"] else "UNVERIFIED (the checksum does not match)"
                click.echo(f"header ({trust}):")
                shown = {k: v for k, v in header.items() if k not in ("verified", "fields")}
                click.echo(json.dumps({**shown, "fields": header.get("fields")}, indent=2))
        raise CliFailure(f"generation {g} of run {run!r} is damaged: {report['reason']}: {report['detail']} "
                         "(the state is not decoded)", EXIT_NO, secrets=cfg.secrets)
    if ck is None:
        raise CliFailure(f"run {run!r} has no committed generation in namespace {cfg.namespace!r}", EXIT_NO,
                         secrets=cfg.secrets)
    state = tagged(ck.state)
    if cfg.as_json:
        r.emit_json({**head, "generation": ck.generation, "head_generation": ck.head_generation, "ok": True,
                     "schema_version": ck.schema_version, "stored_schema_version": ck.stored_schema_version,
                     "skipped": [{"generation": s.generation, "reason": s.reason, "detail": s.detail}
                                 for s in ck.skipped],
                     "metadata": tagged(ck.metadata), "state": state})
    else:
        click.echo(json.dumps(state, indent=2))  # ASCII: stored text never reaches the terminal raw
        if ck.skipped:
            click.echo(f"(generation {ck.generation}; newer ones failed verification: "
                       + ", ".join(f"g{s.generation} {s.reason}" for s in ck.skipped) + ")", err=True)


# --------------------------------------------------------------------------- fork / prune


@click.command()
@connection_options
@click.argument("run")
@click.argument("new")
@click.option("--generation", "-g", type=click.IntRange(min=1), default=None,
              help="Which kept generation of RUN [default: the newest that verifies].")
@click.option("--by", default=None, metavar="NAME", help="Who did it, for the audit events "
              "[default: redis-ckpt-cli@<hostname>].")
def fork(cfg: CliConfig, run: str, new: str, generation: int | None, by: str | None) -> None:
    """Start run NEW from a kept generation of RUN (its metadata names the source).

    Refused (exit 1, nothing written) when NEW already has a head. Both runs record the fork
    in their audit events. Works across Cluster nodes.

    Example: redis-ckpt fork job-42 job-42-retry --generation 3
    """
    by = by_or_default(by)
    made = cfg.store.fork(run, new, generation=generation, by=by)
    # what the fork made, read without decoding the state: a load would run the migrations
    # of an application's schema this CLI does not have, and fail after the fork was written
    made_gen = next((g for g in cfg.store.generations(new) if g.generation == made), None)
    source = (made_gen.metadata or {}).get("forked_from", {}) if made_gen is not None else {}
    info = cfg.store.info(new)
    if cfg.as_json:
        r.emit_json({**base(cfg), "run": run, "new_run": new,
                     "generation": made, "source_generation": source.get("generation"),
                     "checksum": source.get("checksum"), "fence": info.fence, "by": by})
    else:
        click.echo(f"forked run {run!r} generation {source.get('generation')} into {new!r} "
                   f"(generation {made}, fence {info.fence})")


@click.command()
@connection_options
@click.option("--idle", required=True, type=_Duration(), metavar="DURATION",
              help="Remove runs nobody committed to or acquired for this long: 7d, 12h, 30m, 90s.")
@click.option("--dry-run", is_flag=True, help="List the runs it would remove; remove nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--by", default=None, metavar="NAME", help="Who did it [default: redis-ckpt-cli@<hostname>].")
def prune(cfg: CliConfig, idle: int, dry_run: bool, yes: bool, by: str | None) -> None:
    """Remove the runs nobody committed to or acquired for --idle: data, lease, events, staging.

    For runs written before a retention was set: a run under its own retention (a store or run
    retention, or finish(keep_for=...)) is left, however idle: it expires by itself when its
    user asked. A run with a live lease is left; each run is checked again, atomically, as it is removed.
    The fence stays, bumped, as a tombstone. Asks first unless --yes or --dry-run.

    Example: redis-ckpt prune --idle 7d --dry-run
    """
    if not dry_run and not yes:  # with --json too, as revoke and delete
        click.confirm(f"Remove every run of namespace {cfg.namespace!r} idle for {r.duration(idle)} or more?",
                      abort=True, err=True)
    store = cfg.store
    by = by_or_default(by)
    store.core.prune_sweep(idle_ms=idle, by=by, dry_run=dry_run)  # checks --idle and --by before any read
    ids = store.runs()
    found: list[PrunedRun] = []
    unreadable: list[tuple[str, str]] = []  # runs whose data cannot be read: left, named, exit 1
    widths = [max(len("RUN"), *(len(r.printable(i)) for i in ids)), 7, len("GENERATIONS")]
    for run in ids:  # one run at a time: a run whose data is not even parsed does not stop the others
        got = try_read(cfg, run, store.run, store.core.prune_run_flow(run, idle_ms=idle, by=by, dry_run=dry_run))
        if isinstance(got, str):
            unreadable.append((run, got))
        elif got is not None:
            found.append(got)
            if not cfg.as_json:  # printed as it goes: a prune cut short has named what it removed
                lines = [r.line([got.run_id, r.duration(got.idle_ms), got.generations, got.fence], widths)]
                click.echo("\n".join([r.line(_PRUNED, widths), *lines] if len(found) == 1 else lines))
    _pruned(cfg, found, idle, dry_run)
    if unreadable:
        raise CliFailure(f"{len(unreadable)} run(s) could not be read, left as they are: "
                         + "; ".join(f"{i!r}: {e}" for i, e in unreadable), EXIT_NO, secrets=cfg.secrets)


_PRUNED = ("RUN", "IDLE", "GENERATIONS", "FENCE")


def _pruned(cfg: CliConfig, found: list[PrunedRun], idle: int, dry_run: bool) -> None:
    """What ``prune`` printed at the end: the runs it removed (would remove) as JSON, or the
    text summary (each run's row was printed as it went)."""
    if cfg.as_json:
        r.emit_json({**base(cfg), "idle_ms": idle, "dry_run": dry_run,
                     "count": len(found),
                     "runs": [{"run": p.run_id, "idle_ms": p.idle_ms, "generations": p.generations,
                               "fence": p.fence, "pruned": p.pruned} for p in found]})
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(found)} run(s) idle for {r.duration(idle)} or more in namespace {cfg.namespace!r}")
