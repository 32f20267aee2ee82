"""How a ``redis-ckpt`` command ends: its exit code and the one error it shows on stderr.

The whole policy lives here. Every failure becomes one ``error: ...`` line on stderr (a
headline, maybe indented detail lines; with ``--json`` one JSON object ``{"error": ...,
"exit_code": ...}``), never a traceback, never a password, and a documented exit code:

* 0 — success (``check``: the server is durable, possibly with warnings)
* 1 — a definite "no": the server is refused, a generation is damaged, no such run,
  a conflict / fence / corruption error from the store, a confirmation was declined
* 2 — no answer could be had: bad usage or URL, invalid run id or namespace, a number past
  what the store handles (OutOfRangeError), the server
  cannot be reached (connection refused, authentication) or does not answer within
  ``--timeout``, or a check is unverifiable
* 3 — an unexpected error inside redis-ckpt (a bug): still one ``error:`` line naming it
* 141 — stdout was closed before the output was written (``redis-ckpt runs | head``): the
  command stops quietly, as a program killed by SIGPIPE does (128 + 13)

:func:`failure_for` says what an exception raised while a command worked becomes;
:func:`report` shows whatever ended a command and returns its exit code.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

import click

from .. import __version__
from ..errors import (
    CheckpointError,
    InvalidOptionError,
    InvalidRunIdError,
    NonDurableServerError,
    NotFoundError,
    OutOfRangeError,
    StoreUnavailableError,
)
from ..drivers.errors import timed_out, unavailable_message

__all__ = [
    "EXIT_OK",
    "EXIT_NO",
    "EXIT_UNAVAILABLE",
    "EXIT_UNEXPECTED",
    "EXIT_PIPE",
    "CliFailure",
    "NoSuchRun",
    "failure_for",
    "report",
    "unexpected",
    "json_errors",
    "json_mode",
    "remember_secrets",
    "scrub",
    "show_error",
    "show_notice",
    "stdout_closed",
]

EXIT_OK = 0
EXIT_NO = 1
EXIT_UNAVAILABLE = 2
EXIT_UNEXPECTED = 3
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a program its reader stopped reading

_json_errors = False
_secrets: set[str] = set()


def json_errors(on: bool) -> None:
    """From now on, show errors as one JSON object on stderr (``--json`` is in effect)."""
    global _json_errors
    _json_errors = on


def json_mode() -> bool:
    """Whether ``--json`` is in effect (stderr is JSON too: one object per line)."""
    return _json_errors


def remember_secrets(secrets: tuple[str, ...]) -> None:
    """Secrets of the URLs in use: scrubbed from an unexpected error too."""
    _secrets.update(secrets)


def scrub(text: str, secrets: tuple[str, ...], keep: str = "") -> str:
    """``text`` with every secret replaced by ``***``; ``keep`` (the redacted URL, which holds
    none) is left as it is, so a short secret cannot mangle it."""
    if keep and keep in text:
        return keep.join(scrub(part, secrets) for part in text.split(keep))
    for s in secrets:
        text = text.replace(s, "***")
    return text


def show_error(message: str, exit_code: int) -> None:
    """One error on stderr: ``error: ...`` (a headline, maybe indented detail lines), or with
    ``--json`` one JSON object ``{"error": ..., "exit_code": ...}`` on one line."""
    if _json_errors:
        click.echo(json.dumps({"error": message, "exit_code": exit_code}, ensure_ascii=False), err=True)
    else:
        click.echo(f"error: {message}", err=True)


def show_notice(message: str) -> None:
    """A note for the person at the terminal on stderr (``{"notice": ...}`` with ``--json``)."""
    if _json_errors:
        click.echo(json.dumps({"notice": message}, ensure_ascii=False), err=True)
    else:
        click.echo(message, err=True)


def unexpected(exc: BaseException) -> str:
    """The one line an unexpected exception becomes."""
    return (f"unexpected {type(exc).__name__}: {exc} (a bug in redis-ckpt {__version__}: please report it "
            "with the command that led to it)")


class CliFailure(click.ClickException):
    """One ``error: ...`` line (or a headline with indented detail lines) and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_NO, *, secrets: tuple[str, ...] = (),
                 server: str = "") -> None:
        super().__init__(scrub(message, secrets, keep=server))
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        if file is None:
            show_error(self.message, self.exit_code)
        else:
            click.echo(f"error: {self.message}", file=file)


class NoSuchRun(NotFoundError):
    """The run has neither a fence nor a head in this namespace."""

    def __init__(self, run_id: str, namespace: str) -> None:
        super().__init__(f"no such run {run_id!r} in namespace {namespace!r}", run_id=run_id)


def unavailable(exc: BaseException, server: str, timeout: float) -> str:
    """What to say when the server could not be used: no answer in time (a timeout among the
    causes), authentication required or failed, or unreachable (drivers/errors.py reads the causes)."""
    if timed_out(exc):
        return f"{server} did not answer within {timeout:g} s (is it stopped, overloaded or unreachable?)"
    return unavailable_message(server, exc, otherwise=str(exc) if isinstance(exc, StoreUnavailableError)
                               else f"cannot reach {server}: {type(exc).__name__}: {exc}")


def failure_for(exc: Exception, *, server: str, timeout: float, secrets: tuple[str, ...]) -> CliFailure:
    """The :class:`CliFailure` (message, exit code) that an exception raised while a command
    worked on ``server`` (the redacted URL) becomes. The store maps redis-py's exceptions to
    CheckpointErrors (drivers/errors.py, the one seam), so anything else is a bug: exit 3."""
    s = secrets
    if isinstance(exc, (InvalidRunIdError, OutOfRangeError, InvalidOptionError)):  # bad usage: a run id, an option, ...
        return CliFailure(str(exc), EXIT_UNAVAILABLE, secrets=s, server=server)
    if isinstance(exc, StoreUnavailableError):  # unreachable, silent, or authentication required / failed
        return CliFailure(unavailable(exc, server, timeout), EXIT_UNAVAILABLE, secrets=s, server=server)
    if isinstance(exc, NonDurableServerError):
        problems = list(exc.problems)
        levels = {getattr(p, "level", "refuse") for p in problems}
        code = EXIT_UNAVAILABLE if levels == {"unverifiable"} else EXIT_NO
        lines = [f"refusing to use {server}: it cannot keep a commit durable "
                 f"(run `redis-ckpt check` for the full report)"]
        lines += [f"  - {getattr(p, 'check', '?')}: {p}" for p in problems]
        return CliFailure("\n".join(lines), code, secrets=s, server=server)
    if isinstance(exc, CheckpointError):
        return CliFailure(str(exc), EXIT_NO, secrets=s, server=server)
    return CliFailure(unexpected(exc), EXIT_UNEXPECTED, secrets=s, server=server)  # never a traceback: one line, exit 3


def report(exc: Exception) -> int:
    """Show what ended a command (one error on stderr, JSON with ``--json``) and return its
    exit code: a usage error, a :class:`CliFailure`, an abort, or an unexpected exception."""
    if isinstance(exc, click.exceptions.UsageError):
        if _json_errors:
            show_error(exc.format_message(), exc.exit_code)
        else:
            exc.show()
        return exc.exit_code
    if isinstance(exc, CliFailure):
        exc.show()
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        show_error(exc.format_message(), exc.exit_code)
        return exc.exit_code
    if isinstance(exc, click.exceptions.Abort):
        show_error("aborted", EXIT_NO)
        return EXIT_NO
    secrets = tuple(sorted(_secrets, key=len, reverse=True))
    show_error(scrub(unexpected(exc), secrets), EXIT_UNEXPECTED)
    return EXIT_UNEXPECTED


def stdout_closed() -> int:
    """The reader of the output went away (``| head``): nothing more is printed, no error line
    (nobody reads it: the output was not wanted, nothing failed). stdout is pointed at the null
    device so the interpreter's last flush of what is still buffered does not fail again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no real stdout (a test runner's): nothing to flush
        pass
    return EXIT_PIPE
