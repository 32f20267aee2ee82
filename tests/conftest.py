"""Shared fixtures: real Redis/Valkey servers on loopback, started by the suite itself.

* ``durable_server`` — one durable server per engine for the whole session
  (parametrized "valkey", "redis": every test using it runs on both).
* ``client`` — a ``redis.Redis`` on it (bytes replies) — and ``namespace``, a fresh key prefix
  per test whose keys (and only those) are deleted afterwards.
* ``make_server(engine, **config)`` — a dedicated server for tests that need another config,
  replicas or crashes; stopped and removed at the end of the test. ``make_module_server`` is
  the same factory with module lifetime, for servers several tests can share.
* ``store`` — a CheckpointStore on ``client`` (options: override ``store_options``).
* ``cluster`` / ``sentinels`` — a Redis Cluster / a Sentinel set-up per engine, module lifetime.

The servers and harnesses are :mod:`redis_ckpt.testing`'s. A missing server binary or a server that will not start skips the test, or fails it when
the environment variable CI is "true"/"1" (so CI can never pass by skipping everything).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redis_ckpt import CheckpointStore
from redis_ckpt.testing import (
    LocalCluster,
    LocalSentinelSet,
    LocalServer,
    ServerFactory,
    ServerStartError,
    server_unavailable,
)

DURABLE_ENGINES = ["valkey", "redis"]


@pytest.fixture(scope="session", params=DURABLE_ENGINES, ids=DURABLE_ENGINES)
def durable_server(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """A server with appendonly yes / appendfsync always / noeviction, shared by the session."""
    server = ServerFactory(server_unavailable).start(request.param, config={"appendonly": "yes", "appendfsync": "always"})
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


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """``make_server(engine="valkey", *, replica_of=None, password=None, data_dir=None, **config)``:
    a started server with its own config (``_`` for ``-`` in directives), stopped and removed
    at the end of the test."""
    factory = ServerFactory(server_unavailable)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def make_module_server() -> Iterator[ServerFactory]:
    """Like ``make_server``, but the servers live until the end of the test module (reuse them)."""
    factory = ServerFactory(server_unavailable)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def store_options() -> dict[str, Any]:
    """The options of the ``store`` fixture; a module needing others overrides this fixture."""
    return {"keep": 3}


@pytest.fixture
def store(client: redis.Redis, namespace: str, store_options: dict[str, Any]) -> CheckpointStore:
    """A CheckpointStore on ``client`` in the test's namespace (probed on creation)."""
    return CheckpointStore(client, namespace=namespace, **store_options)


def _started(harness: Any) -> Any:
    try:
        return harness.start()
    except ServerStartError as exc:  # e.g. the engine cannot run in sentinel mode
        server_unavailable(str(exc))


@pytest.fixture(scope="module", params=DURABLE_ENGINES, ids=DURABLE_ENGINES)
def cluster(request: pytest.FixtureRequest, make_module_server: ServerFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster (3 primaries + 3 replicas) per engine, shared by the test module."""
    c = _started(LocalCluster(request.param, make_module_server))
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture(scope="module", params=DURABLE_ENGINES, ids=DURABLE_ENGINES)
def sentinels(request: pytest.FixtureRequest, make_module_server: ServerFactory) -> Iterator[LocalSentinelSet]:
    """A primary, one replica and three Sentinels per engine, shared by the test module."""
    s = _started(LocalSentinelSet(request.param, make_module_server))
    try:
        yield s
    finally:
        s.cleanup()
