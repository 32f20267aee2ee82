"""Where to connect, found by the attempt's deadline (sync): the primary a Sentinel names, the
slot map of a Redis Cluster.

redis-py finds them itself (``Sentinel.discover_master`` when a Sentinel-managed connection
connects, ``NodesManager.initialize`` on a slot-map refresh), asking each Sentinel or startup
node in turn on that server's own ``redis.Redis``, each answer under that client's socket
timeout: with every one of them frozen, the number of servers times the socket timeout, far
past any deadline. So the commands of those clients (a Sentinel's clients; a cluster's node
clients, those it makes later included) go through this driver's bounded send
(:func:`.resp.command_sync`) while an attempt of this driver connects or refreshes
(:func:`.deadlines.connecting`): each answer waits no longer than half what the attempt has left
(:func:`share_of`: a frozen server asked first leaves time for the next), and once
nothing is left every server not yet asked fails at once with ``redis.TimeoutError``, so
redis-py's loop ends by the deadline with its own error (``MasterNotFoundError``,
``RedisClusterUnreachableError``), a connection failure the retry policy handles. Outside such
an attempt (the caller's own use of a Sentinel object, redis-py's own routing) they behave as
they did: only the client's ``execute_command`` is wrapped, and the wrapper calls redis-py's.

(Asyncio needs none of this: the driver runs each op, discovery included, under
``asyncio.timeout``.)
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool

from .deadlines import connect_until, wrap_once
from .resp import command_sync, lean_sync

__all__ = ["bound_discovery"]


def bound_discovery(client: Any) -> None:
    """Make the servers ``client`` (sync) asks where to connect answer by the deadline of the
    attempt connecting (see the module); nothing for one server's client or an asyncio one.
    Idempotent: a client (or Sentinel) shared by several stores is wrapped once."""
    if isinstance(client, RedisCluster):
        nodes_manager = client.nodes_manager
        _bound_factory(nodes_manager)
        for node in [*list(nodes_manager.startup_nodes.values()), *list(nodes_manager.nodes_cache.values())]:
            if node.redis_connection is not None:
                _bound_client(node.redis_connection)
        return
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in list(pool.sentinel_manager.sentinels):
            _bound_client(sentinel)


#: below this much time left, one server asked gets all of it
WHOLE_S = 0.05


def share_of(until: float) -> float:
    """The deadline of one server's answer: half the time the attempt has left (all of it when
    little is left). redis-py asks the servers in turn, in random order (a Cluster's startup
    nodes are every node it has met), so one frozen server that got all the time would leave
    none for the next one, which answers at once: with halves, the k-th server asked still gets
    a 2**-k share, and the attempt still ends by ``until``."""
    left = until - time.monotonic()
    return until if left <= WHOLE_S else until - left / 2


def _bound_client(client: Any) -> None:
    """``client.execute_command`` sent through :func:`command_sync` while an attempt connects."""
    if not lean_sync(client):
        return
    original = type(client).execute_command  # the class's: the wrapper holds no reference to the client
    ref = weakref.ref(client)

    def wrapper_of(_current: Any) -> Any:
        def execute_command(*args: Any, **options: Any) -> Any:
            until = connect_until()
            me = ref()
            if until is None or options or not args:
                return original(me, *args, **options)
            return command_sync(me, args, share_of(until))

        return execute_command

    wrap_once(client, "execute_command", wrapper_of)


def _bound_factory(nodes_manager: Any) -> None:
    """Every node client ``nodes_manager`` makes from now on (a refresh meets new nodes) bounded too."""
    if getattr(nodes_manager, "create_redis_node", None) is None:
        return
    original = type(nodes_manager).create_redis_node
    ref = weakref.ref(nodes_manager)

    def wrapper_of(_current: Any) -> Any:
        def create_redis_node(*args: Any, **kwargs: Any) -> redis.Redis:
            made = original(ref(), *args, **kwargs)
            _bound_client(made)
            return made

        return create_redis_node

    wrap_once(nodes_manager, "create_redis_node", wrapper_of)
