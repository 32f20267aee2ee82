"""Shared options of every command, the lazy connection, and error -> exit code mapping.

Like rq's ``CliConfig``: the options are parsed into a :class:`CliConfig`; nothing connects
until a command asks for :attr:`CliConfig.store`. Every failure becomes one ``error: ...``
line on stderr (never a traceback, never a password) and a documented exit code:

* 0 — success (``check``: the server is durable, possibly with warnings)
* 1 — a definite "no": the server is refused, a generation is damaged, no such run,
  a conflict / fence / corruption error from the store, a confirmation was declined
* 2 — no answer could be had: bad usage or URL, invalid run id or namespace, the server
  cannot be reached (connection refused, authentication) or does not answer within
  ``--timeout``, or a check is unverifiable
* 3 — an unexpected error inside redis-ckpt (a bug): still one ``error:`` line naming it

``--timeout`` bounds every wait on the server: the connection and each request's answer
(the CLI's clients never resend), so a stopped server ends any command within it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import click
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import (
    CheckpointError,
    InvalidRunIdError,
    NonDurableServerError,
    NotFoundError,
    StoreUnavailableError,
)
from ..core.retry import RetryPolicy
from ..core.durability import Durability
from ..core.keys import validate_namespace
from ..drivers.errors import unavailable_message
from ..probe.flow import REPLICA_ACK_MS
from ..urls import redact_url, url_secrets, validate_url
from ..store import DEFAULT_NAMESPACE, CheckpointStore

__all__ = [
    "DEFAULT_URL",
    "DEFAULT_NAMESPACE",
    "EXIT_OK",
    "EXIT_NO",
    "EXIT_UNAVAILABLE",
    "EXIT_UNEXPECTED",
    "unexpected",
    "CliConfig",
    "CliFailure",
    "CliGroup",
    "Globals",
    "global_options",
    "current_globals",
    "show_error",
    "show_notice",
    "json_errors",
    "NoSuchRun",
    "connection_options",
    "install_log_handler",
]

DEFAULT_URL = "redis://localhost:6379/0"
URL_ENV = "REDIS_CKPT_URL"
NAMESPACE_ENV = "REDIS_CKPT_NAMESPACE"
TIMEOUT_ENV = "REDIS_CKPT_TIMEOUT"
DEFAULT_TIMEOUT_S = 5.0
#: replicas' AOF fsync acks come once a second: a live check counting on them waits this long
REPLICA_WAIT_MS = REPLICA_ACK_MS

EXIT_OK = 0
EXIT_NO = 1
EXIT_UNAVAILABLE = 2
EXIT_UNEXPECTED = 3

F = TypeVar("F", bound=Callable[..., Any])



class CliFailure(click.ClickException):
    """One ``error: ...`` line (or a headline with indented detail lines) and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_NO, *, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(scrub(message, secrets))
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


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


def live_wait_ms(timeout_s: float) -> int:
    """How long the live write of the startup probe may wait for its confirmation so that the
    answer still comes within ``--timeout``: a second less, at least half of it, at most 5 s."""
    ms = int(timeout_s * 1000)
    return max(1, max(ms // 2, min(5000, ms - 1000)))


def _caused_by(exc: BaseException, types: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``types`` in ``exc``'s chain of causes (``exc`` included)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, types):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def check_url(url: str) -> None:
    """Raise :class:`CliFailure` (exit 2) for a URL redis-py cannot use."""
    label = redact_url(url)
    try:
        validate_url(url)
    except ValueError as exc:
        raise CliFailure(f"bad --url {label}: {exc}", EXIT_UNAVAILABLE, secrets=url_secrets(url)) from None


class CliConfig:
    """Parsed shared options; the store is opened on first use (and closed by the context)."""

    def __init__(self, *, url: str | None, namespace: str, as_json: bool,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.url_given = url
        self.url = url or DEFAULT_URL
        self.namespace = namespace
        self.as_json = as_json
        self.timeout = timeout
        self.secrets = url_secrets(url)
        _secrets.update(self.secrets)  # scrubbed from an unexpected error too
        self._store: CheckpointStore | None = None

    @property
    def server(self) -> str:
        """The URL without its password: the only form in which a URL is ever shown."""
        return redact_url(self.url)

    def validate(self) -> None:
        check_url(self.url)
        validate_namespace(self.namespace)

    @property
    def store(self) -> CheckpointStore:
        if self._store is None:
            self.validate()
            t = self.timeout
            # one attempt per request, each answer awaited at most --timeout: never a hang
            self._store = CheckpointStore.from_url(
                self.url, namespace=self.namespace, socket_timeout=t,
                durability=Durability(timeout_ms=live_wait_ms(t)), retry=RetryPolicy(attempts=1, deadline_s=t))
        return self._store

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn every expected failure into :class:`CliFailure` with its exit code."""
        s = self.secrets
        try:
            yield
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except InvalidRunIdError as exc:
            raise CliFailure(str(exc), EXIT_UNAVAILABLE, secrets=s) from None
        except StoreUnavailableError as exc:
            raise CliFailure(self.unavailable(exc), EXIT_UNAVAILABLE, secrets=s) from None
        except (RedisConnectionError, RedisTimeoutError) as exc:  # incl. AuthenticationError
            raise CliFailure(self.unavailable(exc), EXIT_UNAVAILABLE, secrets=s) from None
        except NonDurableServerError as exc:
            problems = list(exc.problems)
            levels = {getattr(p, "level", "refuse") for p in problems}
            code = EXIT_UNAVAILABLE if levels == {"unverifiable"} else EXIT_NO
            lines = [f"refusing to use {self.server}: it cannot keep a commit durable "
                     f"(run `redis-ckpt check` for the full report)"]
            lines += [f"  - {getattr(p, 'check', '?')}: {p}" for p in problems]
            raise CliFailure("\n".join(lines), code, secrets=s) from None
        except CheckpointError as exc:
            raise CliFailure(str(exc), EXIT_NO, secrets=s) from None
        except RedisError as exc:
            raise CliFailure(f"{self.server} answered with an error: {type(exc).__name__}: {exc}", EXIT_NO,
                             secrets=s) from None
        except Exception as exc:  # noqa: BLE001 - never a traceback: one line, exit 3
            raise CliFailure(unexpected(exc), EXIT_UNEXPECTED, secrets=s) from None

    def unavailable(self, exc: BaseException) -> str:
        """What to say when the server could not be used: no answer in time, or unreachable."""
        if _caused_by(exc, (RedisTimeoutError, TimeoutError)) is not None:
            return (f"{self.server} did not answer within {self.timeout:g} s "
                    "(is it stopped, overloaded or unreachable?)")
        if _caused_by(exc, RedisAuthenticationError) is not None:
            return unavailable_message(self.server, exc)  # required, or failed: never "cannot reach"
        if isinstance(exc, StoreUnavailableError):
            return str(exc)
        return f"cannot reach {self.server}: {type(exc).__name__}: {exc}"


class _StderrHandler(logging.Handler):
    """The library's log records (probe warnings, fallbacks on load) as ``warning: ...`` lines
    on whatever stderr is current (so click's test runner captures them too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            if _json_errors:  # with --json, stderr is JSON too: one object per line
                click.echo(json.dumps({level: self.format(record)}, ensure_ascii=False), err=True)
            else:
                click.echo(f"{level}: {self.format(record)}", err=True)
        except (OSError, ValueError):
            self.handleError(record)


def install_log_handler(ctx: click.Context) -> None:
    """Show the library's warnings on stderr for the duration of one command."""
    log = logging.getLogger("redis_ckpt")
    if any(isinstance(h, _StderrHandler) for h in log.handlers):
        return
    handler = _StderrHandler(logging.WARNING)
    log.addHandler(handler)
    ctx.call_on_close(lambda: log.removeHandler(handler))


@dataclass
class Globals:
    """The connection options given before the command (``redis-ckpt -u URL runs``), with their
    environment variables and defaults; the same options after the command win."""

    url: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    as_json: bool = False
    timeout: float = DEFAULT_TIMEOUT_S


_URL_HELP = (f"Server URL (redis://, rediss://, unix://, redis+cluster://, redis+sentinel://) "
             f"[default: ${URL_ENV}, else {DEFAULT_URL}]. A password in it is never printed.")
_NAMESPACE_HELP = f'Key prefix of the runs [default: ${NAMESPACE_ENV}, else "{DEFAULT_NAMESPACE}"].'
_JSON_HELP = ("Print one JSON object on stdout instead of tables (see the README for the keys); "
              "an error is one JSON object on stderr.")
_TIMEOUT_HELP = (f"Wait at most this long for the server to connect and to answer each request; past it, "
                 f"exit 2 [default: ${TIMEOUT_ENV}, else {DEFAULT_TIMEOUT_S:g}].")
_SECONDS = click.FloatRange(min=0, min_open=True)


def global_options(f: F) -> F:
    """The group's own ``--url``, ``--namespace``, ``--json``, ``--timeout`` (before the command);
    they read the environment and hold the defaults."""
    f = click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)(f)
    f = click.option("--timeout", "-t", type=_SECONDS, envvar=TIMEOUT_ENV, default=DEFAULT_TIMEOUT_S,
                     metavar="SECONDS", help=_TIMEOUT_HELP)(f)
    f = click.option("--namespace", "-n", envvar=NAMESPACE_ENV, default=DEFAULT_NAMESPACE, metavar="NS",
                     help=_NAMESPACE_HELP)(f)
    f = click.option("--url", "-u", envvar=URL_ENV, default=None, metavar="URL", help=_URL_HELP)(f)
    return f


def current_globals() -> Globals:
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Globals) if ctx is not None else None
    return found if found is not None else Globals(url=os.environ.get(URL_ENV) or None)


def connection_options(f: F) -> F:
    """Add ``--url``, ``--namespace``, ``--json``, ``--timeout`` to a command (each falls back to
    the same option given before the command, then to its environment variable and default)
    and pass a :class:`CliConfig` first."""

    @functools.wraps(f)
    def wrapper(*args: Any, url: str | None, namespace: str | None, as_json: bool, timeout: float | None,
                **kwargs: Any) -> Any:
        g = current_globals()
        cfg = CliConfig(url=url if url is not None else g.url,
                        namespace=namespace if namespace is not None else g.namespace,
                        as_json=as_json or g.as_json, timeout=timeout if timeout is not None else g.timeout)
        if cfg.as_json:
            json_errors(True)
        click.get_current_context().call_on_close(cfg.close)
        with cfg.errors():
            return f(cfg, *args, **kwargs)

    wrapper = click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)(wrapper)
    wrapper = click.option("--timeout", "-t", type=_SECONDS, default=None, metavar="SECONDS",
                           help=_TIMEOUT_HELP)(wrapper)
    wrapper = click.option("--namespace", "-n", default=None, metavar="NS", help=_NAMESPACE_HELP)(wrapper)
    wrapper = click.option("--url", "-u", default=None, metavar="URL", help=_URL_HELP)(wrapper)
    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- the group


_json_errors = False
_secrets: set[str] = set()


def unexpected(exc: BaseException) -> str:
    """The one line an unexpected exception becomes."""
    return (f"unexpected {type(exc).__name__}: {exc} (a bug in redis-ckpt {_version()}: please report it "
            "with the command that led to it)")


def _version() -> str:
    from .. import __version__

    return __version__


def json_errors(on: bool) -> None:
    """From now on, show errors as one JSON object on stderr (``--json`` is in effect)."""
    global _json_errors
    _json_errors = on


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
        except click.exceptions.UsageError as usage:
            if _json_errors:
                show_error(usage.format_message(), usage.exit_code)
            else:
                usage.show()
            sys.exit(usage.exit_code)
        except click.ClickException as failure:
            if isinstance(failure, CliFailure):
                failure.show()
            else:
                show_error(failure.format_message(), failure.exit_code)
            sys.exit(failure.exit_code)
        except click.exceptions.Abort:
            show_error("aborted", EXIT_NO)
            sys.exit(EXIT_NO)
        except Exception as exc:  # noqa: BLE001 - never a traceback, whatever happened
            secrets = tuple(sorted(_secrets, key=len, reverse=True))
            show_error(scrub(unexpected(exc), secrets), EXIT_UNEXPECTED)
            sys.exit(EXIT_UNEXPECTED)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)
