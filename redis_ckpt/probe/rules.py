"""The startup probe: can this server keep an acknowledged commit?

Written once, sans-IO, as a flow (see :mod:`redis_ckpt.drivers.sync`) that the sync and the async
store both drive. The flow only *gathers* facts into a :class:`ServerFacts`; the rules live
in the pure function :func:`evaluate`, so each one is unit-tested without a server.

What is gathered, each step tolerating its own ``ReplyError`` (renamed command, ACL
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

On Redis Cluster a driver runs :func:`probe_flow` once per primary with that node's client,
passing a ``probe_key`` whose slot the node owns, and merges the reports.

Where ``CONFIG`` cannot be read, every check that needs it is ``unverifiable`` (which
refuses) unless the operator *declares* the server's profile (``declared``, same keys as
CONFIG GET). Observed facts always win over declared ones: ``appendonly`` and
``maxmemory-policy`` are also read from INFO.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


from ..core.durability import Durability
from ..errors import NonDurableServerError
from ..core.ops import Cmd, Flow, Pipe, ReplyError

__all__ = [
    "CONFIG_KEYS",
    "DRIFT_KEYS",
    "drift_problems",
    "Finding",
    "Level",
    "ProbeReport",
    "ServerFacts",
    "evaluate",
    "facts_from_info",
    "probe_flow",
    "redact_url",
    "SECRET_PARAMS",
]

Level = Literal["ok", "warn", "refuse", "unverifiable"]

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
PROBE_TTL_MS = 60_000
#: how long the live check waits for replicas' AOF fsync acks (they come once a second)
REPLICA_ACK_MS = 2500

_CONF_HINT = "(redis.conf) or CONFIG SET"


def _set_remedy(name: str, value: str) -> str:
    return f"set `{name} {value}` {_CONF_HINT} {name} {value}"


#: the settings a store re-reads with every confirmed write (same pipeline, same connection);
#: ``appendonly no`` needs no re-read: WAITAOF itself then fails
DRIFT_KEYS = ("appendfsync", "maxmemory-policy", "no-appendfsync-on-rewrite")


def drift_problems(config: Mapping[str, str], engine: str) -> list[str]:
    """The refusals among ``config`` (a CONFIG GET of DRIFT_KEYS), for a server that passed the probe.

    The same rules as the probe's refusals for these keys, as one line each with the remedy.
    """
    out = []
    if config.get("appendonly", "yes") != "yes":
        out.append(f"appendonly is {config['appendonly']!r} — {_set_remedy('appendonly', 'yes')}")
    fsync = config.get("appendfsync", "always")
    if fsync == "no" or (fsync == "everysec" and engine != "redis"):
        out.append(f"appendfsync is {fsync!r} — {_set_remedy('appendfsync', 'always')}")
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        out.append(f"maxmemory-policy is {config['maxmemory-policy']!r}, which evicts checkpoints — "
                   f"{_set_remedy('maxmemory-policy', 'noeviction')}")
    if config.get("no-appendfsync-on-rewrite", "no") == "yes":
        out.append("no-appendfsync-on-rewrite is 'yes' (fsync stops during rewrites) — "
                   f"{_set_remedy('no-appendfsync-on-rewrite', 'no')}")
    return out


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Finding:
    """One check's outcome. ``refuse`` and ``unverifiable`` make the probe refuse the server."""

    check: str
    level: Level
    message: str
    remedy: str = ""

    def __str__(self) -> str:
        return f"{self.message} — {self.remedy}" if self.remedy else self.message


@dataclass(frozen=True)
class ProbeReport:
    """Every finding of one probe of one server (``server`` is a label without password)."""

    server: str
    engine: str  # "valkey" | "redis" | "unknown"
    version: str
    findings: list[Finding]
    facts: ServerFacts | None = field(default=None, repr=False, compare=False)

    @property
    def refused(self) -> list[Finding]:
        return [f for f in self.findings if f.level in ("refuse", "unverifiable")]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warn"]

    @property
    def ok(self) -> bool:
        return not self.refused

    def raise_if_refused(self) -> None:
        refused = self.refused
        if refused:
            raise NonDurableServerError(self.server, refused)

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "REFUSED"
        head = f"{self.server} ({self.engine} {self.version or '?'}): {verdict}"
        return "\n".join([head, *(f"  [{f.level}] {f.check}: {f}" for f in self.findings)])


# --------------------------------------------------------------------------- facts


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


#: the share of maxmemory from which ``check`` warns
MEMORY_WARN_SHARE = 0.8


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _text(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def _parse_info_text(raw: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in raw.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, _, v = line.partition(":")
        out[k] = v
    return out


def _as_int(v: Any) -> int | None:
    try:
        return int(_text(v)) if not isinstance(v, int) else v
    except ValueError:
        return None


def facts_from_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`ServerFacts` fields INFO (as parsed by redis-py) gives."""
    engine = "valkey" if _text(info.get("server_name", "")).lower() == "valkey" else "redis"
    version_key = "valkey_version" if engine == "valkey" and "valkey_version" in info else "redis_version"
    role = _text(info["role"]).lower() if "role" in info else None
    online: int | None = None
    replica_entries = [v for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()]
    if replica_entries and all(isinstance(v, Mapping) for v in replica_entries):
        online = sum(1 for v in replica_entries if _text(v.get("state", "")) == "online")
    elif "connected_slaves" in info:
        online = _as_int(info["connected_slaves"])
    primary = None
    if "master_host" in info:
        primary = f"{_text(info['master_host'])}:{_text(info.get('master_port', '?'))}"
    aof = _as_int(info["aof_enabled"]) if "aof_enabled" in info else None
    loading = _as_int(info["loading"]) if "loading" in info else None
    return {
        "engine": engine,
        "version": _text(info.get(version_key, "")),
        "role": role,
        "primary": primary,
        "loading": None if loading is None else loading != 0,
        "aof_enabled": None if aof is None else aof != 0,
        "aof_last_write_status": _text(info["aof_last_write_status"]) if "aof_last_write_status" in info else None,
        "maxmemory_policy": _text(info["maxmemory_policy"]) if "maxmemory_policy" in info else None,
        "evicted_keys": _as_int(info["evicted_keys"]) if "evicted_keys" in info else None,
        "used_memory": _as_int(info["used_memory"]) if "used_memory" in info else None,
        "maxmemory": _as_int(info["maxmemory"]) if "maxmemory" in info else None,
        "replicas_online": online if role in ("master", "primary") else 0 if role else None,
        "cluster_enabled": _as_int(info.get("cluster_enabled", 0)) == 1,
    }


def _normalize_config(reply: Any) -> dict[str, str]:
    if isinstance(reply, Mapping):
        items = list(reply.items())
    else:  # a flat [k, v, k, v] list from a client without the CONFIG GET callback
        seq = list(reply)
        items = list(zip(seq[0::2], seq[1::2]))
    return {_text(k).lower(): _text(v).strip().lower() for k, v in items}


def _normalize_declared(declared: Mapping[str, Any] | None) -> dict[str, str] | None:
    if declared is None:
        return None
    out: dict[str, str] = {}
    for k, v in declared.items():
        key = _text(k).strip().lower()
        if key not in CONFIG_KEYS:
            raise ValueError(
                f"declared config key {k!r} is not one the probe checks; expected some of {', '.join(CONFIG_KEYS)}"
            )
        if isinstance(v, bool):
            v = "yes" if v else "no"
        out[key] = _text(v).strip().lower()
    return out


def _err(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    msg = msg.splitlines()[0].split(", with args beginning with", 1)[0]
    return msg[:200]


# --------------------------------------------------------------------------- rules


class _Settings:
    """Where each setting's value comes from: CONFIG GET, INFO, or the operator's declaration."""

    def __init__(self, facts: ServerFacts, declared: Mapping[str, str] | None) -> None:
        self.facts = facts
        self.declared = declared
        self.used_declared: list[str] = []
        self.mismatches: list[tuple[str, str, str, str]] = []  # key, declared, observed, source

    def observed(self, key: str) -> tuple[str | None, str]:
        f = self.facts
        if f.config is not None and key in f.config:
            return f.config[key], "CONFIG"
        if key == "appendonly" and f.aof_enabled is not None:
            return ("yes" if f.aof_enabled else "no"), "INFO"
        if key == "maxmemory-policy" and f.maxmemory_policy is not None:
            return f.maxmemory_policy.lower(), "INFO"
        return None, ""

    def get(self, key: str) -> tuple[str | None, str]:
        value, source = self.observed(key)
        dv = self.declared.get(key) if self.declared else None
        if value is not None:
            if dv is not None and dv != value:
                self.mismatches.append((key, dv, value, source))
            return value, source
        if dv is not None:
            self.used_declared.append(key)
            return dv, "declared"
        return None, ""

    def why_unknown(self, key: str) -> str:
        f = self.facts
        if f.config is None:
            return f"CONFIG GET is unavailable ({f.config_error or 'no reply'}), so {key} cannot be read"
        return f"the server does not report {key} (CONFIG GET returned nothing for it)"


def _unknown_remedy(key: str, good: str) -> str:
    return (
        f"allow CONFIG GET for this user, or declare the server's profile explicitly "
        f"(declared_config={{'{key}': '{good}', ...}}) if you know it runs `{key} {good}`"
    )


def evaluate(facts: ServerFacts, durability: Durability, declared: Mapping[str, str] | None = None) -> list[Finding]:
    """Every rule of the startup probe over ``facts``. Pure: no I/O."""
    decl = _normalize_declared(declared)
    s = _Settings(facts, decl)
    out: list[Finding] = []
    add = out.append
    engine = facts.engine

    # --- INFO-derived checks
    if facts.info_error is not None:
        why = f"INFO is unavailable ({facts.info_error})"
        remedy = "allow INFO for this user (ACL +info)"
        add(Finding("role", "unverifiable", f"{why}: cannot tell whether the server is a primary", remedy))
        add(Finding("loading", "unverifiable", f"{why}: cannot tell whether the server is still loading", remedy))
        add(Finding("aof-write-status", "unverifiable", f"{why}: cannot read aof_last_write_status", remedy))
    else:
        if facts.role is None:
            add(Finding("role", "unverifiable", "INFO reports no role", "use a server whose INFO has a replication section"))
        elif facts.role in ("master", "primary"):
            add(Finding("role", "ok", "server is a primary"))
        else:
            of = f" of {facts.primary}" if facts.primary else ""
            add(Finding(
                "role", "refuse",
                f"server is a {facts.role}{of}: writes are rejected and WAITAOF is not allowed on replicas",
                f"connect to the primary{' (' + facts.primary + ')' if facts.primary else ''}",
            ))
        if facts.loading is None:
            add(Finding("loading", "unverifiable", "INFO reports no loading state", "retry once INFO persistence answers"))
        elif facts.loading:
            add(Finding("loading", "refuse", "server is still loading its dataset (loading:1)",
                        "wait until INFO persistence shows loading:0, then retry"))
        else:
            add(Finding("loading", "ok", "dataset loaded"))
        st = facts.aof_last_write_status
        if st is None:
            add(Finding("aof-write-status", "unverifiable", "INFO reports no aof_last_write_status",
                        "use a server whose INFO has a persistence section"))
        elif st.lower() != "ok":
            add(Finding("aof-write-status", "refuse", f"the last AOF write failed (aof_last_write_status:{st})",
                        "check the server log and the disk (space, permissions); writes fail until it recovers"))
        else:
            add(Finding("aof-write-status", "ok", "last AOF write succeeded"))

    # --- WAITAOF
    if facts.has_waitaof is False:
        add(Finding(
            "waitaof", "refuse",
            f"{engine} {facts.version or '?'} has no WAITAOF command, so a commit cannot wait for its AOF fsync",
            "upgrade to Redis >= 7.2 or Valkey >= 7.2",
        ))
    elif facts.has_waitaof is None:
        if facts.live_ran and facts.live_error is None and (facts.live_local or 0) >= 1:
            add(Finding("waitaof", "ok", f"WAITAOF answered the live write (COMMAND INFO unavailable: {facts.waitaof_error})"))
        else:
            add(Finding("waitaof", "unverifiable",
                        f"cannot tell whether WAITAOF exists: COMMAND INFO failed ({facts.waitaof_error or 'no reply'})",
                        "allow COMMAND INFO for this user (ACL +command|info)"))
    else:
        add(Finding("waitaof", "ok", "WAITAOF is available"))

    # --- config-dependent checks
    ao, src = s.get("appendonly")
    if ao is None:
        add(Finding("appendonly", "unverifiable", s.why_unknown("appendonly"), _unknown_remedy("appendonly", "yes")))
    elif ao != "yes":
        add(Finding("appendonly", "refuse", f"appendonly is {ao!r}: nothing is written to the AOF",
                    _set_remedy("appendonly", "yes")))
    else:
        add(Finding("appendonly", "ok", f"appendonly yes ({src})"))

    fs, src = s.get("appendfsync")
    if fs is None:
        add(Finding("appendfsync", "unverifiable", s.why_unknown("appendfsync"), _unknown_remedy("appendfsync", "always")))
    elif fs == "always":
        add(Finding("appendfsync", "ok", f"appendfsync always ({src})"))
    elif fs == "no":
        add(Finding("appendfsync", "refuse",
                    "appendfsync is 'no': the server never fsyncs the AOF itself, WAITAOF cannot confirm",
                    _set_remedy("appendfsync", "always")))
    elif fs == "everysec" and engine == "redis":
        add(Finding("appendfsync", "warn",
                    "appendfsync everysec on Redis: every commit waits up to ~1 s for the once-a-second fsync",
                    _set_remedy("appendfsync", "always") + " for ~1 ms commits"))
    elif fs == "everysec":
        what = "on Valkey" if engine == "valkey" else f"on an unidentified engine ({engine})"
        add(Finding("appendfsync", "refuse",
                    f"appendfsync everysec {what}: WAITAOF confirms before the fsync happens "
                    "(Valkey 9.1.2, same bug as redis#13793), so a confirmed commit can be lost",
                    _set_remedy("appendfsync", "always")))
    else:
        add(Finding("appendfsync", "refuse", f"appendfsync has an unknown value {fs!r}", _set_remedy("appendfsync", "always")))

    nr, src = s.get("no-appendfsync-on-rewrite")
    if nr is None:
        add(Finding("no-appendfsync-on-rewrite", "unverifiable", s.why_unknown("no-appendfsync-on-rewrite"),
                    _unknown_remedy("no-appendfsync-on-rewrite", "no")))
    elif nr != "no":
        add(Finding("no-appendfsync-on-rewrite", "refuse",
                    f"no-appendfsync-on-rewrite is {nr!r}: fsync silently stops while the AOF is rewritten",
                    _set_remedy("no-appendfsync-on-rewrite", "no")))
    else:
        add(Finding("no-appendfsync-on-rewrite", "ok", f"no-appendfsync-on-rewrite no ({src})"))

    mp, src = s.get("maxmemory-policy")
    if mp is None:
        add(Finding("maxmemory-policy", "unverifiable", s.why_unknown("maxmemory-policy"),
                    _unknown_remedy("maxmemory-policy", "noeviction")))
    elif mp != "noeviction":
        add(Finding("maxmemory-policy", "refuse",
                    f"maxmemory-policy is {mp!r}: the server may evict acknowledged checkpoints and leases "
                    "(measured: allkeys-lru dropped 195 of 300, volatile-lru evicted leases)",
                    _set_remedy("maxmemory-policy", "noeviction")))
    else:
        add(Finding("maxmemory-policy", "ok", f"maxmemory-policy noeviction ({src})"))

    if engine != "valkey":
        lt, src = s.get("aof-load-truncated")
        if lt is None:
            add(Finding("aof-load-truncated", "warn", s.why_unknown("aof-load-truncated") +
                        " (a torn AOF tail may be half-replayed on restart)",
                        "make sure the server runs `aof-load-truncated no`"))
        elif lt == "yes":
            add(Finding("aof-load-truncated", "warn",
                        "aof-load-truncated yes on Redis: after a torn AOF tail and a second restart, "
                        "Redis can replay half a MULTI (measured on 8.2.3)",
                        _set_remedy("aof-load-truncated", "no") +
                        " (a torn AOF then stops startup; repair it with redis-check-aof)"))
        else:
            add(Finding("aof-load-truncated", "ok", f"aof-load-truncated {lt} ({src})"))

    # --- replicas
    online = facts.replicas_online
    need = durability.replicas
    if need:
        if online is None:
            add(Finding("replicas", "unverifiable",
                        f"policy {durability.label} needs {need} replica(s) but the replica count is unknown",
                        "allow INFO for this user (ACL +info)"))
        elif online < need:
            add(Finding("replicas", "refuse",
                        f"policy {durability.label} needs {need} AOF-enabled replica(s); {online} online",
                        f"attach {need - online} more replica(s) with `appendonly yes` / `appendfsync always`, "
                        "or lower the policy's replicas"))
        elif facts.live_ran and facts.live_error is None and facts.live_replicas is not None \
                and facts.live_replicas < facts.live_replicas_asked:
            add(Finding("replicas", "refuse",
                        f"only {facts.live_replicas} of {facts.live_replicas_asked} replica(s) confirmed an AOF fsync "
                        f"of the live write within {facts.live_timeout_ms} ms (a replica without AOF never does)",
                        "set `appendonly yes` and `appendfsync always` on the replicas"))
        else:
            add(Finding("replicas", "ok", f"{online} replica(s) online, {need} needed"))
    if online:
        mr, src = s.get("min-replicas-to-write")
        if mr is None:
            add(Finding("min-replicas-to-write", "warn", s.why_unknown("min-replicas-to-write"),
                        "make sure the server runs `min-replicas-to-write 1` or more"))
        elif mr == "0":
            add(Finding("min-replicas-to-write", "warn",
                        f"min-replicas-to-write 0 with {online} replica(s): a primary cut off from its replicas "
                        "keeps accepting commits that a failover then loses",
                        _set_remedy("min-replicas-to-write", "1") + " (with min-replicas-max-lag)"))
        else:
            add(Finding("min-replicas-to-write", "ok", f"min-replicas-to-write {mr} ({src})"))

    if facts.evicted_keys:
        add(Finding("evicted-keys", "warn",
                    f"the server has evicted {facts.evicted_keys} key(s) since it started: checkpoints may be gone",
                    "run `maxmemory-policy noeviction` with enough maxmemory, and check the runs' events"))

    used, limit = facts.used_memory, facts.maxmemory
    if used is not None and limit:
        share = used / limit
        level = "warn" if share >= MEMORY_WARN_SHARE else "ok"
        add(Finding("memory", level, f"used_memory {_mib(used)} of maxmemory {_mib(limit)} ({share:.0%})"
                    + (": under noeviction every commit fails with OOM once it is full" if level == "warn" else ""),
                    "raise maxmemory, or remove idle runs (redis-ckpt prune --idle 7d; a store retention)"
                    if level == "warn" else ""))
    elif used is not None and limit == 0:
        add(Finding("memory", "ok", f"used_memory {_mib(used)}, no maxmemory (limited by the machine)"))

    # --- cluster
    if facts.cluster_enabled:
        if facts.cluster_error is not None:
            add(Finding("cluster-state", "unverifiable", f"CLUSTER INFO failed ({facts.cluster_error})",
                        "allow CLUSTER INFO for this user"))
        else:
            cs = facts.cluster_state
            if cs != "ok":
                add(Finding("cluster-state", "refuse", f"cluster_state is {cs!r}: the cluster is not serving",
                            "repair the cluster (redis-cli --cluster check/fix) until cluster_state:ok"))
            else:
                add(Finding("cluster-state", "ok", "cluster_state ok"))
            n = facts.cluster_slots_assigned
            if n is None or n < CLUSTER_SLOTS:
                add(Finding("cluster-slots", "refuse",
                            f"only {n if n is not None else '?'} of {CLUSTER_SLOTS} hash slots are assigned: "
                            "runs in the others cannot be stored",
                            "assign every slot (redis-cli --cluster fix, or CLUSTER ADDSLOTSRANGE)"))
            else:
                add(Finding("cluster-slots", "ok", f"all {CLUSTER_SLOTS} slots assigned"))

    # --- the live write
    if facts.live_ran:
        if facts.live_error is not None:
            add(Finding("live-waitaof", "refuse", f"the live write check failed: {facts.live_error}",
                        "make sure this user may SET keys in the namespace and run WAITAOF"))
        elif facts.live_local is None or facts.live_local < 1:
            add(Finding("live-waitaof", "refuse",
                        f"WAITAOF did not confirm the live write's local AOF fsync within {facts.live_timeout_ms} ms",
                        "check appendonly/appendfsync and the disk the AOF is on"))
        else:
            took = f" in {facts.live_ms:.1f} ms" if facts.live_ms is not None else ""
            add(Finding("live-waitaof", "ok", f"a live write was fsynced to the AOF{took}"))

    # --- where the config came from
    if s.used_declared:
        keys = ", ".join(f"{k}={decl[k]}" for k in s.used_declared) if decl else ""
        add(Finding("config", "warn",
                    f"server config was declared, not read ({facts.config_error or 'CONFIG unavailable'}): "
                    f"trusting the declaration {keys}",
                    "keep the declaration in step with the server's real configuration"))
    for key, dv, value, source in s.mismatches:
        add(Finding("config", "warn", f"declared {key}={dv} but the server reports {key}={value} ({source}); "
                    "the server's value was used", "fix the declaration"))

    if not facts.live_ran and not any(f.level in ("refuse", "unverifiable") for f in out):
        add(Finding("live-waitaof", "unverifiable",
                    f"the live write check did not run ({facts.live_skipped or 'no reason given'})",
                    "run the full probe"))
    return out


# --------------------------------------------------------------------------- the flow


def probe_flow(
    *,
    server: str,
    namespace: str,
    durability: Durability,
    declared: Mapping[str, str] | None = None,
    probe_key: str | None = None,
) -> Flow[ProbeReport]:
    """The startup probe as a flow; drive it with ``drivers.sync.drive`` / ``drivers.asyncio.adrive``.

    ``server`` is a label for messages and must not contain a password (see :func:`redact_url`).
    ``probe_key`` overrides the live write's key (``<namespace>:probe:{probe}``), e.g. so that a
    Cluster driver can pick a key in a slot the probed node owns.
    """
    decl = _normalize_declared(declared)  # a typo in the declaration fails here, not later
    key = probe_key if probe_key is not None else f"{namespace}:probe:{{probe}}"
    return _probe(server, key, durability, decl)


def _probe(server: str, key: str, durability: Durability, declared: dict[str, str] | None) -> Flow[ProbeReport]:
    f: dict[str, Any] = {}

    try:
        info = yield Cmd("INFO")
    except ReplyError as exc:
        f["info_error"] = _err(exc)
    else:
        if isinstance(info, (bytes, str)):
            info = _parse_info_text(_text(info))
        f.update(facts_from_info(info))

    try:
        reply = yield Cmd("CONFIG GET", *CONFIG_KEYS)
    except ReplyError as exc:
        if "wrong number of arguments" in str(exc).lower():  # before Redis 7: one parameter per call
            config: dict[str, str] = {}
            try:
                for k in CONFIG_KEYS:
                    config.update(_normalize_config((yield Cmd("CONFIG GET", k))))
            except ReplyError as exc2:
                f["config_error"] = _err(exc2)
            else:
                f["config"] = config
        else:
            f["config_error"] = _err(exc)
    else:
        f["config"] = _normalize_config(reply)

    try:
        cmd_info = yield Cmd("COMMAND INFO", "WAITAOF")
    except ReplyError as exc:
        f["waitaof_error"] = _err(exc)
    else:
        if isinstance(cmd_info, Mapping):
            f["has_waitaof"] = bool(cmd_info)
        else:
            f["has_waitaof"] = bool(cmd_info) and cmd_info[0] is not None

    if f.get("cluster_enabled"):
        try:
            ci = yield Cmd("CLUSTER INFO")
        except ReplyError as exc:
            f["cluster_error"] = _err(exc)
        else:
            if isinstance(ci, (bytes, str)):
                ci = _parse_info_text(_text(ci))
            f["cluster_state"] = _text(ci.get("cluster_state", "?"))
            f["cluster_slots_assigned"] = _as_int(ci.get("cluster_slots_assigned", -1))

    facts = ServerFacts(**f)
    skip = _live_skip_reason(facts, durability, declared)
    if skip is not None:
        facts = ServerFacts(**f, live_skipped=skip)
    else:
        online = facts.replicas_online or 0
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
            live["live_error"] = f"SET {key}: {_err(set_reply)}"
        elif isinstance(wait_reply, BaseException):
            live["live_error"] = f"WAITAOF: {_err(wait_reply)}"
        else:
            live["live_local"] = int(wait_reply[0])
            live["live_replicas"] = int(wait_reply[1])
            live["live_ms"] = elapsed
        facts = ServerFacts(**f, **live)

    findings = evaluate(facts, durability, declared)
    return ProbeReport(server=server, engine=facts.engine, version=facts.version, findings=findings, facts=facts)


def _live_skip_reason(facts: ServerFacts, durability: Durability, declared: Mapping[str, str] | None) -> str | None:
    if facts.has_waitaof is False:
        return "the server has no WAITAOF"
    if facts.role is not None and facts.role not in ("master", "primary"):
        return "the server is a replica"
    if facts.loading:
        return "the server is loading"
    refusing = [f.check for f in evaluate(facts, durability, declared) if f.level == "refuse"]
    if refusing:
        # e.g. `appendfsync no` would make WAITAOF wait out its whole timeout
        return f"already refused ({', '.join(refusing)})"
    return None


# --------------------------------------------------------------------------- redaction


#: query parameters whose values are secrets (redis-py takes ?password=; Sentinel URLs ?sentinel_password=)
SECRET_PARAMS = frozenset({"password", "pass", "pwd", "auth", "secret", "token", "sentinel_password"})


def redact_url(url: str) -> str:
    """``url`` with any password (userinfo or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:  # user:password (a lone user name is not a secret)
            user = userinfo.split(":", 1)[0]
            userinfo = f"{user}:***"
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
