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

Replies meaning "the pipe did not run where it was sent" are handled in :func:`_pipe_plan`
(sans-IO, shared by both drivers), each bounded:

* ``MOVED`` — patch the slot map (a full refresh from the second one on), resend;
* ``ASK`` — resend to the ASK target with ``ASKING`` before every op (ASKING covers one
  command only), none inside a MULTI block (the one before MULTI covers the transaction);
* ``TRYAGAIN`` (a multi-key script during a slot migration) — back off, resend;
* ``CLUSTERDOWN`` — back off, refresh the slot map, resend;
* ``NOSCRIPT`` — ``SCRIPT LOAD`` on that node, resend.

Resending is safe because each of these replies means the script did not run, and every
later op of a Pipe is a read or a WAITAOF/WAIT (the ``_io`` contract). Past the bound the
driver raises :class:`ClusterUnavailableError`, a redis ``ConnectionError``: the flow's retry
policy treats it like a broken connection (back off, send again, then
``StoreUnavailableError``).

A connection error is thrown into the flow as it is, after the node's idle connections are
dropped and the slot map is marked for a refresh before the next send: the flow's retry
retry (a commit carries an idempotent commit id) resends, to the promoted replica once the
cluster has failed over.

``Cmd`` ops whose first argument is a key (every keyed command a flow sends) travel the same
way, as a one-op pipe to the slot's owner, their reply then parsed as redis-py would. ``SCAN``
has no key: it walks every primary in turn behind one composite cursor (``node index << 64 |
node cursor``, nodes ordered by name). Any other ``Cmd`` goes through the cluster client's
own routing.

Deadlines (sync): every send, script load and back-off ends by the operation's deadline
(``ClusterTarget.until``, set by the driver): a node's connection gets the time left as its
socket timeout for the send (``_io.send_sync``). A slot-map refresh uses the cluster client's
own timeouts. Asyncio: the driver bounds each op with ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Union

from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.ops import Cmd, Pipe, ScriptSource
from .run import AsyncRouted, Routed, _needs_load, _wire, command_sync, lean_sync, load_script_sync, send_sync, time_left

__all__ = [
    "ClusterUnavailableError",
    "ClusterTarget",
    "AsyncClusterTarget",
    "Shard",
    "shards_of",
    "probe_key_for",
]

#: sends of one Pipe before giving up (every redirect, back-off and script load is one)
MAX_SENDS = 16
MAX_REDIRECTS = 8
TRYAGAIN_SLEEP_S = 0.05
MAX_TRYAGAIN = 10
CLUSTERDOWN_SLEEPS_S = (0.1, 0.25, 0.5)
SCAN_NODE_SHIFT = 64  # a node's SCAN cursor is an unsigned 64-bit integer
CLUSTER_SLOTS = 16384


class ClusterUnavailableError(RedisConnectionError):
    """The cluster did not serve a run's slot within the driver's bound (CLUSTERDOWN,
    TRYAGAIN, too many redirects, no owner in the slot map). A ``ConnectionError``, so the
    flow's retry policy backs off and sends again."""


# --------------------------------------------------------------------------- the pipe plan


@dataclass(frozen=True)
class _Send:
    """Send ``commands`` on one connection: to the route's owner, or to ``ask`` (host, port)."""

    commands: list[tuple[Any, ...]]
    ask: tuple[str, int] | None


@dataclass(frozen=True)
class _Moved:
    error: MovedError
    full_refresh: bool


@dataclass(frozen=True)
class _Refresh:
    pass


@dataclass(frozen=True)
class _Load:
    node: Any
    sources: tuple[str, ...]


@dataclass(frozen=True)
class _Wait:
    seconds: float


_Action = Union[_Send, _Moved, _Refresh, _Load, _Wait]


def _cluster_error(replies: Sequence[Any]) -> Exception | None:
    """The first reply saying the op was not served where it was sent (MOVED is an AskError)."""
    for r in replies:
        if isinstance(r, (AskError, TryAgainError, ClusterDownError)):
            return r
    return None


def _asking(wired: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[int]]:
    """``wired`` with ASKING before every op (ASKING covers the next command only), and the
    indices of the ops' own replies. Inside MULTI ... EXEC no ASKING is added: there it would
    be queued (its OK landing in EXEC's reply), and the one before MULTI already covers the
    whole transaction (the server keeps the flag while the client is in MULTI)."""
    commands: list[tuple[Any, ...]] = []
    keep: list[int] = []
    in_multi = False
    for w in wired:
        if not in_multi:
            commands.append(("ASKING",))
        keep.append(len(commands))
        commands.append(w)
        name = _text(w[0]).upper() if w else ""
        if name == "MULTI":
            in_multi = True
        elif name in ("EXEC", "DISCARD"):
            in_multi = False
    return commands, keep


def _pipe_plan(pipe: Pipe, scripts: ScriptSource) -> Generator[_Action, Any, list[Any]]:
    """Decide the sends of one Pipe on a cluster; receives ``(node, replies)`` for a ``_Send``."""
    wired = [_wire(o, scripts) for o in pipe.ops]
    ask: tuple[str, int] | None = None
    redirects = tryagain = down = sends = 0
    last: Exception | None = None
    while sends < MAX_SENDS:
        sends += 1
        commands, keep = _asking(wired) if ask else (wired, None)
        node, replies = yield _Send(commands, ask)
        if keep is not None:
            replies = [replies[i] for i in keep]  # drop the ASKING replies
        ask = None
        err = _cluster_error(replies)
        if err is None:
            missing = _needs_load(pipe, replies)
            if not missing:
                return list(replies)
            yield _Load(node, tuple(scripts.source(n) for n in sorted(set(missing))))
            continue
        last = err
        if isinstance(err, MovedError):
            redirects += 1
            yield _Moved(err, full_refresh=redirects > 1)
        elif isinstance(err, AskError):
            redirects += 1
            ask = (err.host, int(err.port))
        elif isinstance(err, TryAgainError):
            tryagain += 1
            if tryagain > MAX_TRYAGAIN:
                break
            yield _Wait(TRYAGAIN_SLEEP_S)
        else:  # ClusterDownError
            if down >= len(CLUSTERDOWN_SLEEPS_S):
                break
            yield _Wait(CLUSTERDOWN_SLEEPS_S[down])
            down += 1
            yield _Refresh()
        if redirects > MAX_REDIRECTS:
            break
    raise ClusterUnavailableError(
        f"the slot of {pipe.route!r} was not served after {sends} sends "
        f"({redirects} redirects, {tryagain} TRYAGAIN, {down} CLUSTERDOWN); last reply: "
        f"{type(last).__name__ if last else '-'}: {last}"
    )


# --------------------------------------------------------------------------- keyed commands

#: commands whose first argument is a key: a Cmd of these goes to the key's slot owner like a Pipe
KEYED = frozenset({
    "GET", "SET", "DEL", "UNLINK", "EXISTS", "PTTL", "HGET", "HMGET", "HGETALL", "HEXISTS", "HSET", "HDEL",
    "XADD", "XRANGE", "XREVRANGE", "XLEN", "SMEMBERS", "SADD", "SREM", "ZADD", "ZREM", "ZRANGEBYLEX",
    "ZREVRANGEBYLEX", "ZREMRANGEBYLEX",
})


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _name(args: Sequence[Any]) -> str:
    return _text(args[0]).upper() if len(args) > 1 else ""


class _NoScripts:
    """A Pipe of plain commands needs no script source."""

    def sha(self, name: str) -> str:
        raise KeyError(name)

    def source(self, name: str) -> str:
        raise KeyError(name)


_NO_SCRIPTS = _NoScripts()


# --------------------------------------------------------------------------- SCAN


def _is_scan(args: Sequence[Any]) -> bool:
    a = args[0] if args else ""
    return (a.decode() if isinstance(a, bytes) else str(a)).upper() == "SCAN"


def _scan_nodes(nodes_manager: Any) -> list[Any]:
    """Primaries that own at least one slot, ordered by name (the composite cursor's order)."""
    return [s.primary for s in shards_of(nodes_manager)]


def _scan_reply(index: int, cursor: Any, keys: Any, nodes: int) -> list[Any]:
    c = int(cursor)
    if c != 0:
        return [(index << SCAN_NODE_SHIFT) | c, keys]
    if index + 1 < nodes:
        return [(index + 1) << SCAN_NODE_SHIFT, keys]
    return [0, keys]


# --------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class Shard:
    """A primary, its replicas and the slots it owns, as the client's slot map says."""

    primary: Any
    replicas: tuple[Any, ...]
    slots: frozenset[int]


def shards_of(nodes_manager: Any) -> list[Shard]:
    """The shards of a redis-py ``NodesManager`` (sync or async), ordered by primary name."""
    found: dict[str, tuple[Any, dict[str, Any], set[int]]] = {}
    for slot, nodes in list(nodes_manager.slots_cache.items()):
        if not nodes:
            continue
        primary = nodes[0]
        entry = found.setdefault(primary.name, (primary, {}, set()))
        entry[2].add(slot)
        for r in nodes[1:]:
            entry[1][r.name] = r
    return [
        Shard(p, tuple(reps[n] for n in sorted(reps)), frozenset(slots))
        for _, (p, reps, slots) in sorted(found.items())
    ]


def probe_key_for(namespace: str, slots: frozenset[int]) -> str | None:
    """A probe key ``<ns>:probe:{probe-<i>}`` whose hash slot is one of ``slots``."""
    if not slots:
        return None
    for i in range(1_000_000):
        tag = f"probe-{i}"
        if key_slot(tag.encode()) in slots:
            return f"{namespace}:probe:{{{tag}}}"
    return None  # pragma: no cover - 16384 slots are all hit long before


def _drop_idle(pool: Any) -> None:
    pool.disconnect(inuse_connections=False)


# --------------------------------------------------------------------------- sync driver


class ClusterTarget(Routed):
    """What ``_io.run_sync`` drives instead of a ``redis.cluster.RedisCluster``."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.until: float | None = None
        self._refresh_due = False
        self._callbacks: Any = None

    def execute_command(self, *args: Any) -> Any:
        if _is_scan(args):
            return self._scan(args)
        if _name(args) in KEYED:
            reply = self.run_pipe(Pipe([Cmd(*args)], route=_text(args[1])), _NO_SCRIPTS)[0]
            if isinstance(reply, Exception):
                raise reply
            callback = (self._callbacks or {}).get(args[0])
            return callback(reply) if callback is not None else reply
        time_left(self.until)
        return self.cluster.execute_command(*args)

    def run_pipe(self, pipe: Pipe, scripts: ScriptSource) -> list[Any]:
        if pipe.route is None:
            raise ValueError("on Redis Cluster every Pipe needs a route key")
        plan = _pipe_plan(pipe, scripts)
        reply: Any = None
        while True:
            try:
                action = plan.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply = self._do(action, pipe.route)

    # ----------------------------------------------------------------- actions

    def _do(self, action: _Action, route: str) -> Any:
        if isinstance(action, _Send):
            return self._send(action, route)
        if isinstance(action, _Wait):
            left = time_left(self.until)
            time.sleep(action.seconds if left is None else min(action.seconds, left))
        elif isinstance(action, _Moved):
            if action.full_refresh:
                self._refresh()
            else:
                self.cluster.nodes_manager.move_slot(action.error)
        elif isinstance(action, _Refresh):
            self._refresh()
        else:
            r = self.cluster.get_redis_connection(action.node)
            for source in action.sources:
                load_script_sync(r, source, self.until)
        return None

    def _send(self, action: _Send, route: str) -> tuple[Any, list[Any]]:
        if self._refresh_due:
            self._refresh()
        node = self._node_for(route, action.ask)
        r = self.cluster.get_redis_connection(node)
        self._callbacks = getattr(r, "response_callbacks", None)
        try:
            if lean_sync(r):
                return node, send_sync(r, action.commands, self.until)
            time_left(self.until)
            p = r.pipeline(transaction=False)
            for c in action.commands:
                p.execute_command(*c)
            return node, p.execute(raise_on_error=False)
        except (RedisConnectionError, RedisTimeoutError):
            self._lost(node)
            raise

    def _node_for(self, route: str, ask: tuple[str, int] | None) -> Any:
        if ask is not None:
            node = self.cluster.get_node(host=ask[0], port=ask[1])
            if node is None:
                self._refresh()
                node = self.cluster.get_node(host=ask[0], port=ask[1])
            if node is None:
                raise ClusterUnavailableError(f"ASK redirect to {ask[0]}:{ask[1]}, a node the slot map does not know")
            return node
        try:
            return self.cluster.get_node_from_key(route)
        except RedisClusterException as exc:  # SlotNotCoveredError
            self._refresh_due = True
            raise ClusterUnavailableError(f"no node serves the slot of {route!r}: {exc}") from exc

    def _lost(self, node: Any) -> None:
        nm = self.cluster.nodes_manager
        move = getattr(nm, "move_node_to_end_of_cached_nodes", None)
        if move is not None:
            move(node.name)
        if node.redis_connection is not None:
            _drop_idle(node.redis_connection.connection_pool)
        self._refresh_due = True

    def _refresh(self) -> None:
        time_left(self.until)
        self._refresh_due = False
        try:
            self.cluster.nodes_manager.initialize()
        except RedisClusterException as exc:
            self._refresh_due = True
            raise ClusterUnavailableError(f"cannot refresh the cluster's slot map: {exc}") from exc

    def _scan(self, args: Sequence[Any]) -> list[Any]:
        nodes = _scan_nodes(self.cluster.nodes_manager)
        index, cursor = divmod(int(args[1]), 1 << SCAN_NODE_SHIFT)
        if index >= len(nodes):
            return [0, []]
        r = self.cluster.get_redis_connection(nodes[index])
        if lean_sync(r):
            c, keys = command_sync(r, ("SCAN", cursor, *args[2:]), self.until)
        else:
            c, keys = r.execute_command("SCAN", cursor, *args[2:])
        return _scan_reply(index, c, keys, len(nodes))


# --------------------------------------------------------------------------- async driver


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
        await self._node.execute_pipeline(self._commands)
        results = [c.result for c in self._commands]
        if raise_on_error:
            for r in results:
                if isinstance(r, Exception):
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


class AsyncClusterTarget(AsyncRouted):
    """What ``_io.run_async`` drives instead of a ``redis.asyncio.cluster.RedisCluster``."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self._refresh_due = False

    async def execute_command(self, *args: Any) -> Any:
        if _is_scan(args):
            return await self._scan(args)
        return await self.cluster.execute_command(*args)

    async def run_pipe(self, pipe: Pipe, scripts: ScriptSource) -> list[Any]:
        if pipe.route is None:
            raise ValueError("on Redis Cluster every Pipe needs a route key")
        await self.cluster.initialize()  # a no-op once the slot map is loaded
        plan = _pipe_plan(pipe, scripts)
        reply: Any = None
        while True:
            try:
                action = plan.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply = await self._do(action, pipe.route)

    async def _do(self, action: _Action, route: str) -> Any:
        if isinstance(action, _Send):
            return await self._send(action, route)
        if isinstance(action, _Wait):
            await asyncio.sleep(action.seconds)
        elif isinstance(action, _Moved):
            if action.full_refresh:
                await self._refresh()
            else:
                moved = self.cluster.nodes_manager.move_slot(action.error)
                if inspect.isawaitable(moved):  # async since redis-py 6
                    await moved
        elif isinstance(action, _Refresh):
            await self._refresh()
        else:
            for source in action.sources:
                await action.node.execute_command("SCRIPT LOAD", source)
        return None

    async def _send(self, action: _Send, route: str) -> tuple[Any, list[Any]]:
        if self._refresh_due:
            await self._refresh()
        node = await self._node_for(route, action.ask)
        p = _AsyncNodePipeline(node)
        for c in action.commands:
            p.execute_command(*c)
        try:
            return node, await p.execute(raise_on_error=False)
        except (RedisConnectionError, RedisTimeoutError):
            await self._lost(node)
            raise

    async def _node_for(self, route: str, ask: tuple[str, int] | None) -> Any:
        if ask is not None:
            node = self.cluster.get_node(host=ask[0], port=ask[1])
            if node is None:
                await self._refresh()
                node = self.cluster.get_node(host=ask[0], port=ask[1])
            if node is None:
                raise ClusterUnavailableError(f"ASK redirect to {ask[0]}:{ask[1]}, a node the slot map does not know")
            return node
        try:
            return self.cluster.get_node_from_key(route)
        except RedisClusterException as exc:  # SlotNotCoveredError
            self._refresh_due = True
            raise ClusterUnavailableError(f"no node serves the slot of {route!r}: {exc}") from exc

    async def _lost(self, node: Any) -> None:
        nm = self.cluster.nodes_manager
        move = getattr(nm, "move_node_to_end_of_cached_nodes", None)
        if move is not None:
            move(node.name)
        mark = getattr(node, "update_active_connections_for_reconnect", None)
        if mark is not None:
            mark()
            await node.disconnect_free_connections()
        else:  # older redis-py: drop every connection of the node
            await node.disconnect()
        self._refresh_due = True

    async def _refresh(self) -> None:
        self._refresh_due = False
        try:
            await self.cluster.nodes_manager.initialize()
        except RedisClusterException as exc:
            self._refresh_due = True
            raise ClusterUnavailableError(f"cannot refresh the cluster's slot map: {exc}") from exc

    async def _scan(self, args: Sequence[Any]) -> list[Any]:
        await self.cluster.initialize()
        nodes = _scan_nodes(self.cluster.nodes_manager)
        index, cursor = divmod(int(args[1]), 1 << SCAN_NODE_SHIFT)
        if index >= len(nodes):
            return [0, []]
        c, keys = await nodes[index].execute_command("SCAN", cursor, *args[2:])
        return _scan_reply(index, c, keys, len(nodes))
