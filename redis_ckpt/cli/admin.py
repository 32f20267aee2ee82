"""The commands that change a run: ``revoke``, ``delete``, ``export`` (writes a file), ``import``.

``revoke`` and ``delete`` ask for confirmation unless ``--yes``; each records who did it
(``--by``) in the run's audit events.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import IO, Any

import click

from .. import ConflictError, FrameError
from ..core.frame import FrameHeader, frame_checksum, read_header
from . import views
from .exits import EXIT_NO, CliFailure
from .options import CliConfig, by_or_default, connection_options
from .reads import read, run_info

__all__ = ["revoke", "delete", "export_cmd", "import_cmd"]


_by_option = click.option("--by", default=None, metavar="NAME",
                          help="Who did it, for the audit event [default: redis-ckpt-cli@<hostname>].")
_yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


@click.command()
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
    info = run_info(cfg, run)
    by = by_or_default(by)
    if not yes:
        click.confirm(f"Revoke run {run!r} in namespace {cfg.namespace!r}? Fence {info.fence} -> "
                      f"{info.fence + 1}; {views.holder(info)} will be fenced off", abort=True, err=True)
    fence = cfg.store.revoke(run, by=by)
    views.revoke(cfg, info, fence, by)


@click.command()
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
    info = run_info(cfg, run)
    by = by_or_default(by)
    if not yes:
        kept = ", ".join(f"g{g}" for g in info.kept) or "none"
        click.confirm(f"Delete run {run!r} in namespace {cfg.namespace!r}: {len(info.kept)} generation(s) "
                      f"({kept}), its head and lease ({views.holder(info)})? The fence ({info.fence}) is kept "
                      "and bumped", abort=True, err=True)
    deleted = cfg.store.delete(run, by=by)
    views.delete(cfg, info, deleted, cfg.store.info(run).fence, by)


# =========================================================================== export / import


def _write_atomically(path: str, blob: bytes) -> None:
    """A regular file (or a new one) is replaced whole by a rename, never left half written; a
    symlink's target is the file replaced. Anything else (/dev/null, a FIFO, a terminal) is
    written in place: a rename over it would replace the device node with a file."""
    real = os.path.realpath(path)
    try:
        special = not stat.S_ISREG(os.stat(real).st_mode)
    except FileNotFoundError:
        special = False
    if special:
        with open(real, "wb") as fh:
            fh.write(blob)
        return
    fd, tmp = tempfile.mkstemp(prefix=".redis-ckpt-export-", dir=os.path.dirname(real))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass  # already moved or never created
        raise


def _frame(header: FrameHeader, blob: bytes, generation: int) -> dict[str, Any]:
    """What the export and import results say about a frame."""
    return {"run": header.run_id, "generation": generation, "token": header.token, "owner": header.owner,
            "size": len(blob), "checksum": frame_checksum(blob)}


@click.command(name="export")
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
    info = run_info(cfg, run)
    blob = read(cfg, run, cfg.store.export_frame, run, generation=generation)
    header = read_header(blob, run_id=info.run_id, generation=generation)
    if output == "-":
        click.echo(blob, nl=False)  # bytes go to the binary stdout, unchanged
    else:
        try:
            _write_atomically(output, blob)
        except OSError as exc:
            raise CliFailure(f"cannot write {output}: {exc.strerror or exc}", EXIT_NO) from None
    views.exported(cfg, _frame(header, blob, header.generation), output=output)


@click.command(name="import")
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
        generation = cfg.store.import_frame(blob, by=by_or_default(by))
    except ConflictError as conflict:
        raise CliFailure(
            f"cannot import run {header.run_id!r} generation {header.generation}: its head is already at "
            f"generation {conflict.actual} (import only moves a run forward; delete the run first to restore "
            "an older generation)", EXIT_NO) from None
    views.imported(cfg, _frame(header, blob, generation), fence=cfg.store.info(header.run_id).fence, file=name)
