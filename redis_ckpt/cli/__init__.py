"""``redis-ckpt``: the admin command line of redis-ckpt.

    redis-ckpt check                 is this server durable enough? (exit 0/1/2)
    redis-ckpt namespaces            the namespaces that hold runs, with their run counts
    redis-ckpt runs                  the runs of a namespace
    redis-ckpt show RUN              head, kept generations, lease, fence, bytes
    redis-ckpt show RUN --state      the state as JSON (--generation N: a kept one)
    redis-ckpt fence RUN [--follow]  fence, holder, audit events, rejected stale writes
    redis-ckpt verify RUN | --all    frame + checksum of every kept generation
    redis-ckpt revoke RUN            fence off every current holder
    redis-ckpt delete RUN            delete generations and lease (the fence is kept)
    redis-ckpt export RUN -o FILE    one verified frame, as stored
    redis-ckpt import FILE           restore an exported frame
    redis-ckpt fork RUN NEW          start NEW from a kept generation of RUN
    redis-ckpt prune --idle 7d       remove runs nobody touched for that long (--dry-run)
    redis-ckpt demo                  the main job, on a local durable server
    redis-ckpt server                a local durable Valkey in the foreground (Ctrl-C stops it)

Shared options, before the command or after it: --url (default $REDIS_CKPT_URL, else redis://localhost:6379/0),
--namespace (default $REDIS_CKPT_NAMESPACE, else "default"), --json, --timeout (default
$REDIS_CKPT_TIMEOUT, else 5 s).
"""

from __future__ import annotations

from collections.abc import Sequence

from .main import cli

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``redis-ckpt`` console script (exits the process)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="redis-ckpt")
