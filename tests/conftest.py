"""Shared fixtures: real Redis/Valkey servers on loopback, started by the suite itself.

* ``durable_server`` — one durable server per engine for the whole session
  (parametrized "valkey", "redis": every test using it runs on both).
* ``client`` — a ``redis.Redis`` on it (bytes replies) — and ``namespace``, a fresh key prefix
  per test whose keys (and only those) are deleted afterwards.
* ``make_server(engine, **config)`` — a dedicated server for tests that need another config,
  replicas or crashes; stopped and removed at the end of the test. ``make_module_server`` is
  the same factory with module lifetime, for servers several tests can share.

A missing server binary or a server that will not start skips the test, or fails it when
the environment variable CI is "true"/"1" (so CI can never pass by skipping everything).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest
import redis

from redis_ckpt.testing.local_server import LocalServer, ServerBinaryNotFound, ServerStartError

DURABLE_ENGINES = ["valkey", "redis"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def server_unavailable(reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) because a server cannot be had."""
    if in_ci():
        pytest.fail(f"server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def start_server(engine: str, **kw: Any) -> LocalServer:
    """A started LocalServer, or skip/fail the test if it cannot be had."""
    server = LocalServer(engine, **kw)
    try:
        return server.start()
    except (ServerBinaryNotFound, ServerStartError) as exc:
        server.cleanup()
        server_unavailable(str(exc))


def config_from_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """``no_appendfsync_on_rewrite="yes"`` -> ``{"no-appendfsync-on-rewrite": "yes"}``."""
    return {k.replace("_", "-"): v for k, v in settings.items()}


@pytest.fixture(scope="session", params=DURABLE_ENGINES, ids=DURABLE_ENGINES)
def durable_server(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """A server with appendonly yes / appendfsync always / noeviction, shared by the session."""
    server = start_server(request.param, config={"appendonly": "yes", "appendfsync": "always"})
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def namespace() -> str:
    """A key prefix no other test uses."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def client(durable_server: LocalServer, namespace: str) -> Iterator[redis.Redis]:
    """A bytes client on ``durable_server``; the test's namespace is emptied afterwards."""
    c = durable_server.client()
    try:
        yield c
    finally:
        try:
            batch: list[bytes] = []
            for key in c.scan_iter(match=f"{namespace}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    c.unlink(*batch)
                    batch.clear()
            if batch:
                c.unlink(*batch)
        finally:
            c.close()


class ServerFactory:
    """``factory(engine="valkey", *, replica_of=None, password=None, data_dir=None, **config)``.

    Config directives are keyword arguments with ``_`` for ``-``
    (``make_server("redis", appendfsync="everysec", rename_command='CONFIG ""')``).
    """

    def __init__(self) -> None:
        self.made: list[LocalServer] = []

    def __call__(
        self,
        engine: str = "valkey",
        *,
        replica_of: tuple[str, int] | None = None,
        password: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> LocalServer:
        server = start_server(
            engine,
            replica_of=replica_of,
            password=password,
            data_dir=data_dir,
            config=config_from_kwargs(settings),
        )
        self.made.append(server)
        return server

    def close(self) -> None:
        while self.made:  # newest first: replicas before their primaries
            self.made.pop().cleanup()


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """A started server with its own config, stopped and removed at the end of the test."""
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def make_module_server() -> Iterator[ServerFactory]:
    """Like ``make_server``, but the servers live until the end of the test module (reuse them)."""
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.close()
