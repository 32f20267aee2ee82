"""Start servers for a test (or a harness) and remove them all afterwards."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from .binaries import ServerBinaryNotFound
from .processes import ServerStartError
from .server import DataDirInUse, LocalServer

__all__ = ["ServerFactory", "ServerSet", "config_from_kwargs"]


def config_from_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """``no_appendfsync_on_rewrite="yes"`` -> ``{"no-appendfsync-on-rewrite": "yes"}``."""
    return {k.replace("_", "-"): v for k, v in settings.items()}


class ServerFactory:
    """``factory(engine="valkey", *, replica_of=None, password=None, data_dir=None, **config)``:
    a started :class:`LocalServer`, kept until :meth:`close` removes them all (newest first:
    replicas before their primaries).

    Config directives are keyword arguments with ``_`` for ``-``
    (``make("redis", appendfsync="everysec", rename_command='CONFIG ""')``). A server that
    cannot be had raises (:class:`ServerBinaryNotFound`, :class:`ServerStartError`), or goes
    to ``unavailable(reason)`` when given (e.g. :func:`redis_ckpt.testing.ci.server_unavailable`).
    """

    def __init__(self, unavailable: Callable[[str], Any] | None = None) -> None:
        self.made: list[LocalServer] = []
        self.unavailable = unavailable

    def __call__(
        self,
        engine: str = "valkey",
        *,
        replica_of: tuple[str, int] | None = None,
        password: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> LocalServer:
        server = self.start(engine, replica_of=replica_of, password=password, data_dir=data_dir,
                            config=config_from_kwargs(settings))
        self.made.append(server)
        return server

    def start(self, engine: str, **kw: Any) -> LocalServer:
        """A started ``LocalServer(engine, **kw)`` (not kept by the factory)."""
        server = LocalServer(engine, **kw)
        try:
            return server.start()
        except (ServerBinaryNotFound, ServerStartError) as exc:
            server.cleanup()
            if self.unavailable is None or isinstance(exc, DataDirInUse):  # the latter: the caller's mistake
                raise
            self.unavailable(str(exc))
            raise  # unavailable() did not end the test: the error stands

    def close(self) -> None:
        while self.made:
            self.made.pop().cleanup()


S = TypeVar("S", bound="ServerSet")


class ServerSet:
    """Servers that work together (a cluster, a Sentinel set-up). :meth:`start` builds them,
    removing every one when that fails; :meth:`cleanup` removes them; a context manager.

    ``make`` starts one server (a :class:`ServerFactory`, e.g. a test suite's, so that its
    policy for a missing binary applies); default: a factory of this set's own.
    """

    def __init__(self, engine: str, make: Callable[..., LocalServer] | None = None) -> None:
        self.engine = engine
        self.make = make if make is not None else ServerFactory()
        self.servers: list[LocalServer] = []

    def build(self) -> None:
        """Start the servers (appending each to :attr:`servers`) and wait until they serve."""
        raise NotImplementedError

    def start(self: S) -> S:
        try:
            self.build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        for s in reversed(self.servers):
            s.cleanup()

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
