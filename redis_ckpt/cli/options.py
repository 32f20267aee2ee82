"""The options every command shares, and the lazy connection (like rq's ``shared_options``
and ``CliConfig``).

``--url``, ``--namespace``, ``--json``, ``--timeout`` and ``--declare`` go before the command (the
group's own: they read the environment and hold the defaults) or after it (the command's: they win).
They are parsed into a :class:`CliConfig`; nothing connects until a command asks for
:attr:`CliConfig.store`, and whatever the command raises becomes its exit code
(:func:`~redis_ckpt.cli.exits.failure_for`).

``--timeout`` bounds every wait on the server: the connection and each request's answer
(the CLI's clients never resend), so a stopped server ends any command within it.
"""

from __future__ import annotations

import functools
import math
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from .. import DEFAULT_NAMESPACE, CheckpointStore, Durability, RetryPolicy
from ..core.keys import validate_namespace
from ..probe import CONFIG_KEYS
from ..probe.flow import REPLICA_ACK_MS
from ..urls import PERCENT_ENCODE_PASSWORD, PERCENT_ENCODE_QUERY_PASSWORD, redact_url, url_secrets, validate_url
from .exits import EXIT_UNAVAILABLE, CliFailure, failure_for, json_errors, remember_secrets

__all__ = [
    "by_or_default",
    "DEFAULT_URL",
    "DEFAULT_NAMESPACE",
    "URL_ENV",
    "REPLICA_WAIT_MS",
    "CliConfig",
    "Globals",
    "global_options",
    "current_globals",
    "connection_options",
    "check_url",
    "parse_declared",
    "live_wait_ms",
]

DEFAULT_URL = "redis://localhost:6379/0"
URL_ENV = "REDIS_CKPT_URL"
NAMESPACE_ENV = "REDIS_CKPT_NAMESPACE"
TIMEOUT_ENV = "REDIS_CKPT_TIMEOUT"
DEFAULT_TIMEOUT_S = 5.0
#: replicas' AOF fsync acks come once a second: a live check counting on them waits this long
REPLICA_WAIT_MS = REPLICA_ACK_MS

F = TypeVar("F", bound=Callable[..., Any])


def live_wait_ms(timeout_s: float) -> int:
    """How long the live write of the startup probe may wait for its confirmation so that the
    answer still comes within ``--timeout``: a second less, at least half of it, at most 5 s
    (the cap last: below ``--timeout`` whenever ``--timeout`` is 2 ms or more)."""
    ms = int(timeout_s * 1000)
    return max(1, min(5000, max(ms // 2, ms - 1000)))


def check_url(url: str) -> None:
    """Raise :class:`CliFailure` (exit 2) for a URL redis-py cannot use."""
    label = redact_url(url)
    try:
        validate_url(url)
    except ValueError as exc:
        # the label is redacted already; only the parser's text may quote a secret (when the
        # password holds an unencoded '#', '?' or '/', or a query password an '&', urls.py
        # says only what to do: a short secret must not mangle that; else scrub)
        why = str(exc)
        secrets = () if why in (PERCENT_ENCODE_PASSWORD, PERCENT_ENCODE_QUERY_PASSWORD) else url_secrets(url)
        raise CliFailure(f"bad --url {label}: {why}", EXIT_UNAVAILABLE, secrets=secrets, server=label) from None


def by_or_default(by: str | None) -> str:
    """``--by`` (who did it, for the audit event), or who runs the CLI when it is not given:
    ``redis-ckpt-cli@<hostname>``. ``--by ""`` stays "": the store refuses it (exit 2)."""
    return f"redis-ckpt-cli@{socket.gethostname()}" if by is None else by


def parse_declared(values: Sequence[str]) -> dict[str, str] | None:
    """``--declare KEY=VALUE ...`` as the store's ``declared_config`` (None: nothing declared)."""
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


class CliConfig:
    """Parsed shared options; the store is opened on first use (and closed by the context)."""

    def __init__(self, *, url: str | None, namespace: str, as_json: bool,
                 timeout: float = DEFAULT_TIMEOUT_S, declared: Mapping[str, str] | None = None) -> None:
        self.url_given = url
        self.url = url or DEFAULT_URL
        self.namespace = namespace
        self.as_json = as_json
        self.timeout = timeout
        self.declared = dict(declared) if declared else None  # --declare: what CONFIG GET cannot show
        self.secrets = url_secrets(url)
        remember_secrets(self.secrets)  # scrubbed from an unexpected error too
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
                self.url, namespace=self.namespace, socket_timeout=t, declared_config=self.declared,
                durability=Durability(timeout_ms=live_wait_ms(t)), retry=RetryPolicy(attempts=1, deadline_s=t))
        return self._store

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn every expected failure into :class:`CliFailure` with its exit code."""
        try:
            yield
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit, BrokenPipeError):
            raise  # a BrokenPipeError is stdout closed (| head), for the group's main
        except Exception as exc:  # noqa: BLE001 - never a traceback: failure_for says what it becomes
            raise failure_for(exc, server=self.server, timeout=self.timeout, secrets=self.secrets) from None


@dataclass
class Globals:
    """The connection options given before the command (``redis-ckpt -u URL runs``), with their
    environment variables and defaults; the same options after the command win."""

    url: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    as_json: bool = False
    timeout: float = DEFAULT_TIMEOUT_S
    declared: tuple[str, ...] = ()


_URL_HELP = (f"Server URL (redis://, rediss://, unix://, redis+cluster://, redis+sentinel://) "
             f"[default: ${URL_ENV}, else {DEFAULT_URL}]. A password in it is never printed.")
_NAMESPACE_HELP = f'Key prefix of the runs [default: ${NAMESPACE_ENV}, else "{DEFAULT_NAMESPACE}"].'
_JSON_HELP = ("Print one JSON object on stdout instead of tables (see the README for the keys); "
              "an error is one JSON object on stderr.")
_TIMEOUT_HELP = (f"Wait at most this long for the server to connect and to answer each request; past it, "
                 f"exit 2 [default: ${TIMEOUT_ENV}, else {DEFAULT_TIMEOUT_S:g}].")
_DECLARE_HELP = ("Declare a server setting CONFIG GET cannot read (a managed service denying CONFIG), "
                 "e.g. --declare appendfsync=always. Repeatable.")
MAX_TIMEOUT_S = 86400.0  # a day: every wait past it is a mistake (and inf or 1e300 overflowed a deadline)


class _Seconds(click.FloatRange):
    """A timeout: finite, > 0 and at most MAX_TIMEOUT_S (FloatRange lets NaN through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number of seconds.", param, ctx)
        return seconds


_SECONDS = _Seconds(min=0, min_open=True, max=MAX_TIMEOUT_S)


def _options(f: F, *, group: bool) -> F:
    """``--url``, ``--namespace``, ``--json``, ``--timeout`` on ``f``: the group's read the
    environment and hold the defaults; a command's default to None (then the group's count)."""

    def default(env: str, value: Any) -> dict[str, Any]:
        return {"envvar": env, "default": value} if group else {"default": None}

    f = click.option("--declare", "declared", multiple=True, metavar="KEY=VALUE", help=_DECLARE_HELP)(f)
    f = click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)(f)
    f = click.option("--timeout", "-t", type=_SECONDS, metavar="SECONDS", help=_TIMEOUT_HELP,
                     **default(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))(f)
    f = click.option("--namespace", "-n", metavar="NS", help=_NAMESPACE_HELP,
                     **default(NAMESPACE_ENV, DEFAULT_NAMESPACE))(f)
    f = click.option("--url", "-u", metavar="URL", help=_URL_HELP, **default(URL_ENV, None))(f)
    return f


def global_options(f: F) -> F:
    """The group's own ``--url``, ``--namespace``, ``--json``, ``--timeout`` (before the command);
    they read the environment and hold the defaults."""
    return _options(f, group=True)


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
                declared: tuple[str, ...], **kwargs: Any) -> Any:
        g = current_globals()
        cfg = CliConfig(url=url if url is not None else g.url,
                        namespace=namespace if namespace is not None else g.namespace,
                        as_json=as_json or g.as_json, timeout=timeout if timeout is not None else g.timeout,
                        declared=parse_declared(declared or g.declared))
        if cfg.as_json:
            json_errors(True)
        click.get_current_context().call_on_close(cfg.close)
        with cfg.errors():
            return f(cfg, *args, **kwargs)

    return _options(wrapper, group=False)  # type: ignore[return-value]
