"""Real Redis/Valkey servers on loopback, for tests (the suite's and yours), the demo and the
benchmarks.

* :class:`LocalServer` — one server process, durable by default (:mod:`.server`);
* :class:`LocalCluster` — 3 primaries + 3 replicas (:mod:`.cluster`);
* :class:`LocalSentinelSet` — a primary, a replica, three Sentinels (:mod:`.sentinel`);
* :class:`ServerFactory` — start servers with keyword config, remove them all at the end;
* :func:`wait_for` — poll a condition on live servers;
* :func:`server_unavailable` — skip locally, fail in CI (:mod:`.ci`).

Where the binaries come from: :mod:`.binaries`; processes that never outlive this one and
free ports: :mod:`.processes`.
"""

from .binaries import ENGINES, ServerBinaryNotFound, find_server_binary, server_version
from .ci import in_ci, server_unavailable
from .cluster import LocalCluster
from .factory import ServerFactory, ServerSet
from .processes import HOST, ServerStartError, free_port
from .sentinel import LocalSentinel, LocalSentinelSet
from .server import DataDirInUse, LocalServer
from .wait import WaitTimeout, wait_for

__all__ = [
    # servers
    "LocalServer",
    "LocalCluster",
    "LocalSentinelSet",
    "LocalSentinel",
    "ServerFactory",
    "ServerSet",
    # binaries
    "ENGINES",
    "find_server_binary",
    "server_version",
    "ServerBinaryNotFound",
    "ServerStartError",
    "DataDirInUse",
    # helpers
    "HOST",
    "free_port",
    "wait_for",
    "WaitTimeout",
    "in_ci",
    "server_unavailable",
]
