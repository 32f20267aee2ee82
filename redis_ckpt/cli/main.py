"""The ``redis-ckpt`` click group: the shared options given before the command, ``-V``, the
library's warnings on stderr, and every command, one module per topic:

    check.py    check                                   is this server durable enough?
    inspect.py  runs, namespaces, show, fence, verify   read-only
    admin.py    revoke, delete, export, import          change a run
    lifecycle.py fork, prune, show --state              a run's life: a fork, idle runs removed
    server.py   server, demo                            a local durable Valkey, the main job

How a command ends (exit code, the one error line) is :mod:`~redis_ckpt.cli.exits`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from . import admin, check, inspect, lifecycle, server
from .exits import EXIT_OK, json_errors, json_mode, report, stdout_closed
from .options import Globals, global_options

__all__ = ["cli", "CliGroup"]


class CliGroup(click.Group):
    """The ``redis-ckpt`` group: every way a command can end becomes its documented exit code
    and one error on stderr (JSON with ``--json``), never a traceback."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(args) if args is not None else sys.argv[1:]
        options = argv[: argv.index("--")] if "--" in argv else argv
        json_errors("--json" in options)  # before parsing: a usage error of a --json command is JSON too
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except Exception as exc:  # noqa: BLE001 - never a traceback, whatever happened
            sys.exit(report(exc))
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # `redis-ckpt runs | head`: the reader has what it wanted
            raise click.exceptions.Exit(stdout_closed()) from None  # (click's own answer: exit 1, "a no")


class _StderrHandler(logging.Handler):
    """The library's log records (probe warnings, fallbacks on load) as ``warning: ...`` lines
    on whatever stderr is current (so click's test runner captures them too). An ERROR record
    (a load that fell back past a damaged generation) is a warning here too: "error" is the
    CLI's word for the one line of a command that failed, with its exit code."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "warning"
            if json_mode():  # with --json, stderr is JSON too: one object per line
                click.echo(json.dumps({level: self.format(record)}, ensure_ascii=False), err=True)
            else:
                click.echo(f"{level}: {self.format(record)}", err=True)
        except (OSError, ValueError):
            self.handleError(record)


def _install_log_handler(ctx: click.Context) -> None:
    """Show the library's warnings on stderr for the duration of one command."""
    log = logging.getLogger("redis_ckpt")
    if any(isinstance(h, _StderrHandler) for h in log.handlers):
        return
    handler = _StderrHandler(logging.WARNING)
    log.addHandler(handler)
    ctx.call_on_close(lambda: log.removeHandler(handler))


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="redis-ckpt")
@global_options
@click.pass_context
def cli(ctx: click.Context, url: str | None, namespace: str, as_json: bool, timeout: float,
        declared: tuple[str, ...]) -> None:
    """Inspect and administer redis-ckpt checkpoints on Redis / Valkey.

    The connection options go before the command (redis-ckpt -u URL runs) or after it:
    --url (default $REDIS_CKPT_URL, else redis://localhost:6379/0), --namespace (default
    $REDIS_CKPT_NAMESPACE, else "default"), --json, --timeout (default $REDIS_CKPT_TIMEOUT,
    else 5 s), --declare KEY=VALUE (a setting a CONFIG-denied server cannot show; repeatable).

    Exit codes: 0 ok; 1 a definite "no" (server refused, damaged generation or unreadable run
    data, no such run, store error, declined confirmation); 2 no answer (usage, bad URL or run
    id, server unreachable or silent past --timeout, check unverifiable); 3 an unexpected error
    (a bug: one error line, never a traceback); 141 stdout closed early (| head), nothing said.

    Shell completion: eval "$(_REDIS_CKPT_COMPLETE=bash_source redis-ckpt)" (zsh_source, fish_source).
    """
    ctx.obj = Globals(url=url, namespace=namespace, as_json=as_json, timeout=timeout, declared=declared)
    if as_json:
        json_errors(True)
    _install_log_handler(ctx)


for command in (check.check,
                inspect.runs, inspect.namespaces, inspect.show, inspect.fence, inspect.verify,
                admin.revoke, admin.delete, admin.export_cmd, admin.import_cmd,
                lifecycle.fork, lifecycle.prune,
                server.server, server.demo):
    cli.add_command(command)
