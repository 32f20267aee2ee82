"""Redis Cluster routing as plans: the decisions, sans I/O, that the Cluster targets of
:mod:`redis_ckpt.drivers.cluster` carry out.

A plan is a generator run by the one trampoline of each I/O style (``sync.drive`` /
``asyncio.adrive``): it yields actions (send on one connection to a node, load a script,
patch or refresh the slot map, drop a lost node's connections, back off) and reads the
client's slot map (``get_node_from_key``, ``get_node``: no I/O). :func:`pipe_plan` sends one
Pipe to the node owning its route's slot; replies meaning "the pipe did not run where it was
sent" are handled here, each bounded:

* ``MOVED`` — patch the slot map (a full refresh from the second one on), resend;
* ``ASK`` — resend to the ASK target with ``ASKING`` before every op (ASKING covers one
  command only), none inside a MULTI block (the one before MULTI covers the transaction);
* ``TRYAGAIN`` (a multi-key script during a slot migration) — back off, resend;
* ``CLUSTERDOWN`` — back off, refresh the slot map, resend;
* ``NOSCRIPT`` — ``SCRIPT LOAD`` on that node, resend.

Resending is safe because each of these replies means the script did not run, and every
later op of a Pipe is a read or a WAITAOF/WAIT (the drivers' contract, see ``sync``). Past
the bound the plan raises :class:`ClusterUnavailableError`, a redis ``ConnectionError``: the
flow's retry policy treats it like a broken connection (back off, send again, then
``StoreUnavailableError``). A connection error marks the node lost (its idle connections
dropped, the slot map refreshed before the next send) and goes on to the flow.

:func:`scan_plan` walks every primary in turn behind one composite cursor (``node index << 64
| node cursor``, primaries ordered by name).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Union

from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.ops import Pipe, ScriptSource, Sleep
from ..core.replies import text
from .resp import needs_load, wire

__all__ = [
    "ClusterUnavailableError", "View", "pipe_plan", "scan_plan", "KEYED", "NO_SCRIPTS", "Shard", "shards_of",
    "probe_key_for", "CLUSTER_SLOTS", "name_of", "Send", "Command", "Load", "Move", "Refresh", "Lost", "Action",
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


# --------------------------------------------------------------------------- plan actions


@dataclass(frozen=True)
class Send:
    """Send ``commands`` on one connection to ``node``; answered with the replies."""

    node: Any
    commands: list[tuple[Any, ...]]


@dataclass(frozen=True)
class Command:
    """One command on ``node``; answered with its reply."""

    node: Any
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Load:
    node: Any
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Move:
    """Patch the slot map after a MOVED reply."""

    error: MovedError


@dataclass(frozen=True)
class Refresh:
    """Read the slot map again."""


@dataclass(frozen=True)
class Lost:
    """Drop ``node``'s idle connections (its connection broke)."""

    node: Any


Action = Union[Send, Command, Load, Move, Refresh, Lost, Sleep]


class View:
    """What the plans of one target share: whether the slot map needs a refresh before the
    next send (after a lost node, or a slot no node serves)."""

    refresh_due = False


# --------------------------------------------------------------------------- the plans


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
        name = text(w[0]).upper() if w else ""
        if name == "MULTI":
            in_multi = True
        elif name in ("EXEC", "DISCARD"):
            in_multi = False
    return commands, keep


def _refresh(view: View) -> Generator[Action, Any, None]:
    view.refresh_due = False
    try:
        yield Refresh()
    except RedisClusterException as exc:
        view.refresh_due = True
        raise ClusterUnavailableError(f"cannot refresh the cluster's slot map: {exc}") from exc


def _node_for(cluster: Any, view: View, route: str, ask: tuple[str, int] | None) -> Generator[Action, Any, Any]:
    """The node to send to: the ASK target, else the owner of ``route``'s slot."""
    if ask is not None:
        node = cluster.get_node(host=ask[0], port=ask[1])
        if node is None:
            yield from _refresh(view)
            node = cluster.get_node(host=ask[0], port=ask[1])
        if node is None:
            raise ClusterUnavailableError(f"ASK redirect to {ask[0]}:{ask[1]}, a node the slot map does not know")
        return node
    try:
        return cluster.get_node_from_key(route)
    except RedisClusterException as exc:  # SlotNotCoveredError
        view.refresh_due = True
        raise ClusterUnavailableError(f"no node serves the slot of {route!r}: {exc}") from exc


def _lost(cluster: Any, view: View, node: Any) -> Generator[Action, Any, None]:
    """``node``'s connection broke: its idle connections dropped, the slot map read again
    before the next send (the node asked last while it is read)."""
    move = getattr(cluster.nodes_manager, "move_node_to_end_of_cached_nodes", None)
    if move is not None:
        move(node.name)
    yield Lost(node)
    view.refresh_due = True


def pipe_plan(pipe: Pipe, scripts: ScriptSource, cluster: Any, view: View) -> Generator[Action, Any, Any]:
    """Decide the sends of one Pipe on a cluster; returns (node, replies)."""
    if pipe.route is None:
        raise ValueError("on Redis Cluster every Pipe needs a route key")
    wired = [wire(o, scripts) for o in pipe.ops]
    ask: tuple[str, int] | None = None
    redirects = tryagain = down = sends = 0
    last: Exception | None = None
    while sends < MAX_SENDS:
        sends += 1
        if view.refresh_due:
            yield from _refresh(view)
        node = yield from _node_for(cluster, view, pipe.route, ask)
        commands, keep = _asking(wired) if ask else (wired, None)
        try:
            replies = yield Send(node, commands)
        except (RedisConnectionError, RedisTimeoutError):
            yield from _lost(cluster, view, node)
            raise
        if keep is not None:
            replies = [replies[i] for i in keep]  # drop the ASKING replies
        ask = None
        err = _cluster_error(replies)
        if err is None:
            missing = needs_load(pipe, replies)
            if not missing:
                return node, list(replies)
            yield Load(node, tuple(scripts.source(n) for n in sorted(set(missing))))
            continue
        last = err
        if isinstance(err, MovedError):
            redirects += 1
            if redirects > 1:
                yield from _refresh(view)
            else:
                yield Move(err)
        elif isinstance(err, AskError):
            redirects += 1
            ask = (err.host, int(err.port))
        elif isinstance(err, TryAgainError):
            tryagain += 1
            if tryagain > MAX_TRYAGAIN:
                break
            yield Sleep(TRYAGAIN_SLEEP_S)
        else:  # ClusterDownError
            if down >= len(CLUSTERDOWN_SLEEPS_S):
                break
            yield Sleep(CLUSTERDOWN_SLEEPS_S[down])
            down += 1
            yield from _refresh(view)
        if redirects > MAX_REDIRECTS:
            break
    raise ClusterUnavailableError(
        f"the slot of {pipe.route!r} was not served after {sends} sends "
        f"({redirects} redirects, {tryagain} TRYAGAIN, {down} CLUSTERDOWN); last reply: "
        f"{type(last).__name__ if last else '-'}: {last}"
    )


def scan_plan(args: Sequence[Any], cluster: Any, view: View) -> Generator[Action, Any, list[Any]]:
    """``SCAN`` over every primary in turn behind one composite cursor (``node index << 64 |
    node cursor``), primaries ordered by name. A primary whose connection breaks is lost as
    in :func:`pipe_plan` (the slot map read again before the next send: after a failover the
    next attempt scans the promoted replica)."""
    if view.refresh_due:
        yield from _refresh(view)
    nodes = [s.primary for s in shards_of(cluster.nodes_manager)]
    index, cursor = divmod(int(args[1]), 1 << SCAN_NODE_SHIFT)
    if index >= len(nodes):
        return [0, []]
    try:
        c, keys = yield Command(nodes[index], ("SCAN", cursor, *args[2:]))
    except (RedisConnectionError, RedisTimeoutError):
        yield from _lost(cluster, view, nodes[index])
        raise
    return _scan_reply(index, c, keys, len(nodes))


def _scan_reply(index: int, cursor: Any, keys: Any, nodes: int) -> list[Any]:
    c = int(cursor)
    if c != 0:
        return [(index << SCAN_NODE_SHIFT) | c, keys]
    if index + 1 < nodes:
        return [(index + 1) << SCAN_NODE_SHIFT, keys]
    return [0, keys]


#: commands whose first argument is a key: a Cmd of these goes to the key's slot owner like a Pipe
KEYED = frozenset({
    "GET", "SET", "DEL", "UNLINK", "EXISTS", "PTTL", "HGET", "HMGET", "HGETALL", "HEXISTS", "HSET", "HDEL",
    "XADD", "XRANGE", "XREVRANGE", "XLEN", "SMEMBERS", "SADD", "SREM", "ZADD", "ZREM", "ZRANGEBYLEX",
    "ZREVRANGEBYLEX", "ZREMRANGEBYLEX",
})


def name_of(args: Sequence[Any]) -> str:
    return text(args[0]).upper() if args else ""


class _NoScripts:
    """A Pipe of plain commands needs no script source."""

    def sha(self, name: str) -> str:
        raise KeyError(name)

    def source(self, name: str) -> str:
        raise KeyError(name)


NO_SCRIPTS = _NoScripts()


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
