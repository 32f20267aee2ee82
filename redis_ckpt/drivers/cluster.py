"""Redis Cluster: the driver half that sends each ``Pipe`` to the node owning its slot.

``WAITAOF`` counts only the calling connection's own earlier writes, so a commit's EVALSHA
and its WAITAOF (or WAIT) must travel in one pipeline, on one connection, to the primary
that owns the run's slot. redis-py's cluster pipeline and ``RedisCluster.waitaof()`` do not
promise that: WAITAOF has no key, so they may send it to another node, whose answer proves
nothing (measured: a WAITAOF on the wrong node after a MOVED script answers ``[1, 1]``).
So here, with ``route`` a key of the run:

* sync: ``node = cluster.get_node_from_key(route)``, then
  ``cluster.get_redis_connection(node).pipeline(transaction=False)`` — a plain pipeline on
  that node's own ``redis.Redis``;
* async: ``node = cluster.get_node_from_key(route)``, then ``node.execute_pipeline([...])``
  — one connection taken from that ``ClusterNode``'s own pool for the whole pipeline.

Every decision is in a plan (:mod:`redis_ckpt.drivers.cluster_plan`: MOVED, ASK, TRYAGAIN,
CLUSTERDOWN, NOSCRIPT, SCAN over every primary), run by the one trampoline of each I/O style;
the targets below carry out its actions, a few lines each.

Sync, ``Cmd`` ops whose first argument is a key (every keyed command a flow sends) travel as a
one-op pipe to the slot's owner, their reply then parsed as redis-py would. Any other ``Cmd``
but ``SCAN`` goes through the cluster client's own routing.

Deadlines (sync): every send, script load and back-off ends by the operation's deadline: a
node's connection gets the time left as its socket timeout for the send (``resp.send_sync``).
A slot-map refresh (redis-py's ``NodesManager.initialize``, which asks the startup nodes in
turn) ends by it too: the node clients' commands go through the same bounded send while it
runs (:mod:`.discovery`). Asyncio: the driver bounds each op with ``asyncio.timeout``.
"""

from __future__ import annotations

import inspect
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.ops import Cmd, Pipe, ScriptSource
from ..core.replies import text
from .asyncio import AsyncPlanTarget, adrive
from .cluster_plan import (
    CLUSTER_SLOTS,
    KEYED,
    NO_SCRIPTS,
    Action,
    ClusterUnavailableError,
    Command,
    Load,
    Lost,
    Move,
    Refresh,
    Send,
    Shard,
    View,
    name_of,
    pipe_plan,
    probe_key_for,
    scan_plan,
    shards_of,
)
from .deadlines import connecting
from .discovery import bound_discovery
from .errors import failure, in_place
from .resp import command_sync, lean_sync, load_script_sync, numbers_as_text, send_sync, time_left
from .sync import PlanTarget, drive

__all__ = [
    "ClusterTarget", "AsyncClusterTarget", "AsyncNodeClient",
    # the slot map, for the multi-node probe (from cluster_plan)
    "ClusterUnavailableError", "Shard", "shards_of", "probe_key_for", "CLUSTER_SLOTS",
]


# --------------------------------------------------------------------------- sync


class ClusterTarget(View):
    """The core's ops on a ``redis.cluster.RedisCluster`` (see ``sync.drive``)."""

    def __init__(self, cluster: Any, scripts: ScriptSource) -> None:
        self.cluster = cluster
        self.scripts = scripts
        self._plan = PlanTarget(self.act)
        bound_discovery(cluster)  # a slot-map refresh ends by the deadline

    failure = staticmethod(failure)

    def do(self, op: Any, until: float | None) -> Any:
        if isinstance(op, Pipe):
            return in_place(self.pipe(op, until))
        if isinstance(op, Cmd):
            return self.command(op.args, until)
        raise TypeError(f"a flow yielded {op!r}, not an op")

    def pipe(self, pipe: Pipe, until: float | None = None) -> list[Any]:
        """``pipe``'s replies, sent on one connection to the slot's owner."""
        return drive(pipe_plan(pipe, self.scripts, self.cluster, self), self._plan, until=until)[1]  # type: ignore[no-any-return]

    def command(self, args: tuple[Any, ...], until: float | None) -> Any:
        if name_of(args) == "SCAN":
            return drive(scan_plan(args, self.cluster, self), self._plan, until=until)
        if len(args) > 1 and name_of(args) in KEYED:
            node, (reply,) = drive(pipe_plan(Pipe([Cmd(*args)], route=text(args[1])), NO_SCRIPTS, self.cluster,
                                             self), self._plan, until=until)
            if isinstance(reply, Exception):
                raise reply
            callbacks = getattr(self.cluster.get_redis_connection(node), "response_callbacks", None) or {}
            callback = callbacks.get(args[0])
            return callback(reply) if callback is not None else reply
        time_left(until)
        return self.cluster.execute_command(*numbers_as_text(args))

    def act(self, action: Action, until: float | None) -> Any:
        """Carry out one action of a plan."""
        nm = self.cluster.nodes_manager
        if isinstance(action, Send):
            r = self.cluster.get_redis_connection(action.node)
            if lean_sync(r):
                return send_sync(r, action.commands, until)
            time_left(until)
            p = r.pipeline(transaction=False)
            for c in action.commands:
                p.execute_command(*numbers_as_text(c))
            return p.execute(raise_on_error=False)
        if isinstance(action, Command):
            r = self.cluster.get_redis_connection(action.node)
            if lean_sync(r):
                return command_sync(r, action.args, until)
            return r.execute_command(*numbers_as_text(action.args))
        if isinstance(action, Move):
            nm.move_slot(action.error)
        elif isinstance(action, Refresh):
            time_left(until)
            with connecting(until):  # each startup node asked answers within the time left, or not at all
                nm.initialize()
        elif isinstance(action, Lost):
            if action.node.redis_connection is not None:
                action.node.redis_connection.connection_pool.disconnect(inuse_connections=False)
        elif isinstance(action, Load):
            r = self.cluster.get_redis_connection(action.node)
            for source in action.sources:
                load_script_sync(r, source, until)
        else:
            raise TypeError(f"a cluster plan yielded {action!r}")
        return None


# --------------------------------------------------------------------------- asyncio


class _AsyncNodePipeline:
    """A pipeline on one connection of one ``redis.asyncio.cluster.ClusterNode``."""

    def __init__(self, node: Any) -> None:
        from redis.asyncio.cluster import PipelineCommand

        self._node = node
        self._command = PipelineCommand
        self._commands: list[Any] = []

    def execute_command(self, *args: Any) -> _AsyncNodePipeline:
        self._commands.append(self._command(len(self._commands), *args))
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """The replies, a server error in place; a broken or timed-out connection (or a
        LOADING server, as the sync send) raised: redis-py keeps what a read raised as that
        command's result, which is no reply (and the later ones were never read)."""
        await self._node.execute_pipeline(self._commands)
        results = [c.result for c in self._commands]
        for r in results:
            if isinstance(r, (RedisConnectionError, RedisTimeoutError)) or (raise_on_error and isinstance(r, Exception)):
                raise r
        return results


class AsyncNodeClient:
    """The few client methods a flow needs, on one async cluster node (for per-node probes)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    async def execute_command(self, *args: Any) -> Any:
        return await self.node.execute_command(*args)

    def pipeline(self, transaction: bool = False) -> _AsyncNodePipeline:
        if transaction:
            raise ValueError("only non-transactional pipelines run on a cluster node")
        return _AsyncNodePipeline(self.node)

    async def script_load(self, source: str) -> Any:
        return await self.node.execute_command("SCRIPT LOAD", source)


class AsyncClusterTarget(View):
    """The core's ops on a ``redis.asyncio.cluster.RedisCluster`` (see ``asyncio.adrive``,
    which bounds each op, a plan's actions included, with ``asyncio.timeout``)."""

    def __init__(self, cluster: Any, scripts: ScriptSource) -> None:
        self.cluster = cluster
        self.scripts = scripts
        self._plan = AsyncPlanTarget(self.act)

    failure = staticmethod(failure)

    async def do(self, op: Any, until: float | None) -> Any:
        if isinstance(op, Pipe):
            await self.cluster.initialize()  # a no-op once the slot map is loaded
            return in_place((await adrive(pipe_plan(op, self.scripts, self.cluster, self), self._plan))[1])
        if isinstance(op, Cmd):
            if name_of(op.args) == "SCAN":
                await self.cluster.initialize()
                return await adrive(scan_plan(op.args, self.cluster, self), self._plan)
            return await self.cluster.execute_command(*numbers_as_text(op.args))
        raise TypeError(f"a flow yielded {op!r}, not an op")

    async def act(self, action: Action, until: float | None) -> Any:
        """Carry out one action of a plan."""
        nm = self.cluster.nodes_manager
        if isinstance(action, Send):
            p = _AsyncNodePipeline(action.node)
            for c in action.commands:
                p.execute_command(*numbers_as_text(c))
            return await p.execute(raise_on_error=False)
        if isinstance(action, Command):
            return await action.node.execute_command(*numbers_as_text(action.args))
        if isinstance(action, Move):
            moved = nm.move_slot(action.error)
            if inspect.isawaitable(moved):  # async since redis-py 6
                await moved
        elif isinstance(action, Refresh):
            await nm.initialize()
        elif isinstance(action, Lost):
            mark = getattr(action.node, "update_active_connections_for_reconnect", None)
            if mark is not None:
                mark()
                await action.node.disconnect_free_connections()
            else:  # older redis-py: drop every connection of the node
                await action.node.disconnect()
        elif isinstance(action, Load):
            for source in action.sources:
                await action.node.execute_command("SCRIPT LOAD", source)
        else:
            raise TypeError(f"a cluster plan yielded {action!r}")
        return None
