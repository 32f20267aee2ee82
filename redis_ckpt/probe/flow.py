"""The startup probe of one server, as a flow (sans-IO: it yields ops, a driver runs them).

The flow only *gathers* :class:`ServerFacts`; :func:`redis_ckpt.probe.rules.evaluate` judges
them. What is gathered, each step tolerating its own ``ReplyError`` (renamed command, ACL
``NOPERM``, unknown subcommand):

* ``INFO`` — engine (``server_name:valkey``), version, role, loading, AOF state, memory
  policy, evictions, online replicas, ``cluster_enabled``;
* ``CONFIG GET`` of :data:`CONFIG_KEYS`;
* ``COMMAND INFO WAITAOF`` — feature detection, never by version string
  (Valkey reports ``redis_version:7.2.4``);
* ``CLUSTER INFO`` when ``cluster_enabled:1``;
* a live write: ``SET <ns>:probe:{probe} <random> PX 60000`` + ``WAITAOF 1 <n> <timeout>``
  in one pipeline on one connection, n = the policy's replicas (so a replica without AOF,
  which never acks an fsync, is caught; this costs ~1 s, the replicas' ack period). It is
  skipped when the facts above already refuse (e.g. ``appendfsync no`` makes WAITAOF wait
  out its whole timeout).

On Redis Cluster and Sentinel, :mod:`redis_ckpt.probe.topology` runs this flow once per node.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from ..core.durability import Durability
from ..core.ops import Cmd, Flow, Pipe, ReplyError
from ..core.replies import text
from .facts import (
    CONFIG_KEYS,
    ServerFacts,
    as_int,
    error_text,
    facts_from_info,
    normalize_config,
    normalize_declared,
    parse_info_text,
)
from .report import ProbeReport
from .rules import evaluate

__all__ = ["probe_flow", "PROBE_TTL_MS", "REPLICA_ACK_MS"]

PROBE_TTL_MS = 60_000
#: how long the live check waits for replicas' AOF fsync acks (they come once a second)
REPLICA_ACK_MS = 2500


def probe_flow(
    *,
    server: str,
    namespace: str,
    durability: Durability,
    declared: Mapping[str, str] | None = None,
    probe_key: str | None = None,
) -> Flow[ProbeReport]:
    """The startup probe of one server as a flow.

    ``server`` is a label for messages and must not contain a password (see
    :func:`redis_ckpt.urls.redact_url`). ``probe_key`` overrides the live write's key
    (``<namespace>:probe:{probe}``), e.g. so that a Cluster node gets a key in a slot it owns.
    """
    decl = normalize_declared(declared)  # a typo in the declaration fails here, not later
    key = probe_key if probe_key is not None else f"{namespace}:probe:{{probe}}"
    return _probe(server, key, durability, decl)


def _probe(server: str, key: str, durability: Durability, declared: dict[str, str] | None) -> Flow[ProbeReport]:
    f: dict[str, Any] = {}
    f.update((yield from _info()))
    f.update((yield from _config()))
    f.update((yield from _waitaof()))
    if f.get("cluster_enabled"):
        f.update((yield from _cluster_info()))
    facts = ServerFacts(**f)
    skip = _live_skip_reason(facts, durability, declared)
    if skip is not None:
        facts = ServerFacts(**f, live_skipped=skip)
    else:
        facts = ServerFacts(**f, **(yield from _live_write(key, durability, facts.replicas_online or 0)))
    findings = evaluate(facts, durability, declared)
    return ProbeReport(server=server, engine=facts.engine, version=facts.version, findings=findings, facts=facts)


def _info_reply(*args: Any) -> Flow[Mapping[str, Any]]:
    """INFO / CLUSTER INFO as a mapping, whether the client parsed the reply or not."""
    reply = yield Cmd(*args)
    return parse_info_text(text(reply)) if isinstance(reply, (bytes, str)) else reply


def _info() -> Flow[dict[str, Any]]:
    try:
        info = yield from _info_reply("INFO")
    except ReplyError as exc:
        return {"info_error": error_text(exc)}
    return facts_from_info(info)


def _config() -> Flow[dict[str, Any]]:
    try:
        reply = yield Cmd("CONFIG GET", *CONFIG_KEYS)
    except ReplyError as exc:
        if "wrong number of arguments" not in str(exc).lower():
            return {"config_error": error_text(exc)}
        config: dict[str, str] = {}  # before Redis 7: one parameter per call
        try:
            for k in CONFIG_KEYS:
                config.update(normalize_config((yield Cmd("CONFIG GET", k))))
        except ReplyError as exc2:
            return {"config_error": error_text(exc2)}
        return {"config": config}
    return {"config": normalize_config(reply)}


def _waitaof() -> Flow[dict[str, Any]]:
    try:
        cmd_info = yield Cmd("COMMAND INFO", "WAITAOF")
    except ReplyError as exc:
        return {"waitaof_error": error_text(exc)}
    if isinstance(cmd_info, Mapping):
        return {"has_waitaof": bool(cmd_info)}
    return {"has_waitaof": bool(cmd_info) and cmd_info[0] is not None}


def _cluster_info() -> Flow[dict[str, Any]]:
    try:
        ci = yield from _info_reply("CLUSTER INFO")
    except ReplyError as exc:
        return {"cluster_error": error_text(exc)}
    return {"cluster_state": text(ci.get("cluster_state", "?")),
            "cluster_slots_assigned": as_int(ci.get("cluster_slots_assigned", -1))}


def _live_write(key: str, durability: Durability, online: int) -> Flow[dict[str, Any]]:
    asked = durability.replicas if online >= durability.replicas else 0
    # replicas ack their AOF fsync once a second: give them that long even when the
    # policy's own commit timeout is shorter (the question here is "do they have AOF?")
    timeout = max(durability.timeout_ms, REPLICA_ACK_MS) if asked else durability.timeout_ms
    token = secrets.token_hex(16)
    t0 = time.perf_counter()
    replies = yield Pipe([Cmd("SET", key, token, "PX", PROBE_TTL_MS), Cmd("WAITAOF", 1, asked, timeout)], route=key)
    elapsed = (time.perf_counter() - t0) * 1000.0
    live: dict[str, Any] = {"live_ran": True, "live_replicas_asked": asked, "live_timeout_ms": timeout}
    set_reply, wait_reply = replies[0], replies[1]
    if isinstance(set_reply, BaseException):
        live["live_error"] = f"SET {key}: {error_text(set_reply)}"
    elif isinstance(wait_reply, BaseException):
        live["live_error"] = f"WAITAOF: {error_text(wait_reply)}"
    else:
        live["live_local"] = int(wait_reply[0])
        live["live_replicas"] = int(wait_reply[1])
        live["live_ms"] = elapsed
    return live


def _live_skip_reason(facts: ServerFacts, durability: Durability, declared: Mapping[str, str] | None) -> str | None:
    if facts.has_waitaof is False:
        return "the server has no WAITAOF"
    if facts.role is not None and not facts.is_primary:
        return "the server is a replica"
    if facts.loading:
        return "the server is loading"
    refusing = [f.check for f in evaluate(facts, durability, declared) if f.level == "refuse"]
    if refusing:
        # e.g. `appendfsync no` would make WAITAOF wait out its whole timeout
        return f"already refused ({', '.join(refusing)})"
    return None
