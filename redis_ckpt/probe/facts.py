"""What the startup probe learns about one server: :class:`ServerFacts`, and the parsing of the
replies it is learned from (INFO, CONFIG GET, CLUSTER INFO), whatever the RESP version or the
client's ``decode_responses``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.replies import text
from ..errors import InvalidOptionError

__all__ = [
    "CONFIG_KEYS",
    "CLUSTER_SLOTS",
    "ServerFacts",
    "facts_from_info",
    "parse_info_text",
    "normalize_config",
    "normalize_declared",
    "as_int",
    "error_text",
]

#: the server settings the probe reads with CONFIG GET (and the keys ``declared`` accepts)
CONFIG_KEYS = (
    "appendonly",
    "appendfsync",
    "no-appendfsync-on-rewrite",
    "maxmemory-policy",
    "aof-load-truncated",
    "min-replicas-to-write",
)

CLUSTER_SLOTS = 16384


@dataclass(frozen=True)
class ServerFacts:
    """What the probe learned about one server. ``None`` means "could not be learned".

    ``config`` is the CONFIG GET result (``None`` when CONFIG is renamed or denied; a key the
    server does not know is simply absent). ``live_*`` describe the live write check:
    ``live_ran`` False means it was not run (``live_skipped`` says why).
    """

    engine: str = "unknown"
    version: str = ""
    info_error: str | None = None
    role: str | None = None
    primary: str | None = None  # host:port of the primary when this is a replica
    loading: bool | None = None
    aof_enabled: bool | None = None
    aof_last_write_status: str | None = None
    maxmemory_policy: str | None = None
    evicted_keys: int | None = None
    used_memory: int | None = None
    maxmemory: int | None = None  # 0: no limit
    replicas_online: int | None = None
    cluster_enabled: bool = False
    config: Mapping[str, str] | None = None
    config_error: str | None = None
    has_waitaof: bool | None = None
    waitaof_error: str | None = None
    cluster_state: str | None = None
    cluster_slots_assigned: int | None = None
    cluster_error: str | None = None
    live_ran: bool = False
    live_skipped: str | None = None
    live_local: int | None = None
    live_replicas: int | None = None
    live_replicas_asked: int = 0
    live_timeout_ms: int = 0
    live_error: str | None = None
    live_ms: float | None = None

    @property
    def is_primary(self) -> bool:
        return self.role in ("master", "primary")


def parse_info_text(raw: str) -> dict[str, Any]:
    """``INFO`` / ``CLUSTER INFO`` as text (a client without their reply callbacks) -> a dict."""
    out: dict[str, Any] = {}
    for line in raw.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, _, v = line.partition(":")
        out[k] = v
    return out


def as_int(v: Any) -> int | None:
    try:
        return int(text(v)) if not isinstance(v, int) else v
    except ValueError:
        return None


#: the ``*_version`` fields of Redis's own INFO (any other names another engine)
_REDIS_VERSION_FIELDS = frozenset({"redis_version", "gcc_version"})


def _engine(info: Mapping[str, Any]) -> str:
    """``valkey`` (``server_name:valkey`` or a ``valkey_version``); ``redis`` only when INFO
    has a ``redis_version`` and nothing names another engine (no ``server_name``, no other
    ``*_version``): Redis's leniencies were measured on Redis alone; else ``unknown``."""
    name = text(info.get("server_name", "")).lower()
    if name == "valkey" or "valkey_version" in info:
        return "valkey"
    foreign = any(str(k).endswith("_version") and k not in _REDIS_VERSION_FIELDS for k in info)
    return "redis" if not name and "redis_version" in info and not foreign else "unknown"


def facts_from_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`ServerFacts` fields INFO (as parsed by redis-py) gives."""
    engine = _engine(info)
    version_key = "valkey_version" if engine == "valkey" and "valkey_version" in info else "redis_version"
    role = text(info["role"]).lower() if "role" in info else None
    online: int | None = None
    replica_entries = [v for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()]
    if replica_entries and all(isinstance(v, Mapping) for v in replica_entries):
        online = sum(1 for v in replica_entries if text(v.get("state", "")) == "online")
    elif "connected_slaves" in info:
        online = as_int(info["connected_slaves"])
    primary = None
    if "master_host" in info:
        primary = f"{text(info['master_host'])}:{text(info.get('master_port', '?'))}"
    aof = as_int(info["aof_enabled"]) if "aof_enabled" in info else None
    loading = as_int(info["loading"]) if "loading" in info else None
    return {
        "engine": engine,
        "version": text(info.get(version_key, "")),
        "role": role,
        "primary": primary,
        "loading": None if loading is None else loading != 0,
        "aof_enabled": None if aof is None else aof != 0,
        "aof_last_write_status": text(info["aof_last_write_status"]) if "aof_last_write_status" in info else None,
        "maxmemory_policy": text(info["maxmemory_policy"]) if "maxmemory_policy" in info else None,
        "evicted_keys": as_int(info["evicted_keys"]) if "evicted_keys" in info else None,
        "used_memory": as_int(info["used_memory"]) if "used_memory" in info else None,
        "maxmemory": as_int(info["maxmemory"]) if "maxmemory" in info else None,
        "replicas_online": online if role in ("master", "primary") else 0 if role else None,
        "cluster_enabled": as_int(info.get("cluster_enabled", 0)) == 1,
    }


def normalize_config(reply: Any) -> dict[str, str]:
    """A CONFIG GET reply (a mapping, or a flat ``[k, v, k, v]`` list from a client without
    the CONFIG GET callback) -> ``{lowercase key: lowercase value}``."""
    if isinstance(reply, Mapping):
        items = list(reply.items())
    else:
        seq = list(reply)
        items = list(zip(seq[0::2], seq[1::2]))
    return {text(k).lower(): text(v).strip().lower() for k, v in items}


def normalize_declared(declared: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The operator's declared profile, checked (:class:`InvalidOptionError` for a key the probe does
    not check: a typo fails at once) and normalized like :func:`normalize_config`."""
    if declared is None:
        return None
    out: dict[str, str] = {}
    for k, v in declared.items():
        key = text(k).strip().lower()
        if key not in CONFIG_KEYS:
            raise InvalidOptionError(
                f"declared config key {k!r} is not one the probe checks; expected some of {', '.join(CONFIG_KEYS)}",
                argument="declared_config")
        if isinstance(v, bool):
            v = "yes" if v else "no"
        out[key] = text(v).strip().lower()
    return out


def error_text(exc: BaseException) -> str:
    """The first line of an error, without redis-py's argument dump, at most 200 characters."""
    msg = str(exc).strip() or type(exc).__name__
    msg = msg.splitlines()[0].split(", with args beginning with", 1)[0]
    return msg[:200]
