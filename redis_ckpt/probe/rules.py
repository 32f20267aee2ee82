"""The rules of the startup probe: can a server with these :class:`ServerFacts` keep an
acknowledged commit? Pure: no I/O, so each rule is unit-tested with hand-made facts.

:func:`evaluate` applies :data:`RULES` in order; each rule reads a :class:`Context` (the facts,
the durability policy, the settings) and yields its findings. The four settings that refuse a
server are judged by the rules of :mod:`.settings` (``SETTING_RULES``), which the drift check
of every confirmed write applies too.

Where ``CONFIG`` cannot be read, every check that needs it is ``unverifiable`` (which refuses)
unless the operator *declares* the server's profile (``declared``, same keys as CONFIG GET).
Observed facts always win over declared ones: ``appendonly`` and ``maxmemory-policy`` are also
read from INFO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.durability import Durability
from .facts import CLUSTER_SLOTS, ServerFacts, normalize_declared
from .report import Finding
from .settings import SETTING_RULES, set_remedy

__all__ = ["Context", "RULES", "MEMORY_WARN_SHARE", "evaluate"]


def _unknown_remedy(key: str, good: str) -> str:
    return (
        f"allow CONFIG GET for this user, or declare the server's profile explicitly "
        f"(declared_config={{'{key}': '{good}', ...}}) if you know it runs `{key} {good}`"
    )


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What every rule reads. ``setting(key)`` says where each value comes from (CONFIG GET,
    INFO, or the operator's declaration) and records declared values used or contradicted."""

    facts: ServerFacts
    durability: Durability
    declared: dict[str, str] | None = None
    used_declared: list[str] = field(default_factory=list)
    mismatches: list[tuple[str, str, str, str]] = field(default_factory=list)  # key, declared, observed, source

    def observed(self, key: str) -> tuple[str | None, str]:
        f = self.facts
        if f.config is not None and key in f.config:
            return f.config[key], "CONFIG"
        if key == "appendonly" and f.aof_enabled is not None:
            return ("yes" if f.aof_enabled else "no"), "INFO"
        if key == "maxmemory-policy" and f.maxmemory_policy is not None:
            return f.maxmemory_policy.lower(), "INFO"
        return None, ""

    def setting(self, key: str) -> tuple[str | None, str]:
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


Rule = Callable[[Context], Iterator[Finding]]


# --------------------------------------------------------------------------- INFO


def _unknown_in_info(c: Context, check: str, value: object, cannot: str, missing: str, remedy: str) -> Finding | None:
    """The finding of an INFO fact that cannot be judged: INFO is unavailable (``cannot``
    says what that hides), or the fact is ``missing`` from it; None when it can be judged."""
    if c.facts.info_error is not None:
        return Finding(check, "unverifiable", f"INFO is unavailable ({c.facts.info_error}): {cannot}",
                       "allow INFO for this user (ACL +info)")
    if value is None:
        return Finding(check, "unverifiable", missing, remedy)
    return None


def role(c: Context) -> Iterator[Finding]:
    f = c.facts
    unknown = _unknown_in_info(c, "role", f.role, "cannot tell whether the server is a primary",
                               "INFO reports no role", "use a server whose INFO has a replication section")
    if unknown is not None:
        yield unknown
    elif f.is_primary:
        yield Finding("role", "ok", "server is a primary")
    else:
        of = f" of {f.primary}" if f.primary else ""
        yield Finding("role", "refuse",
                      f"server is a {f.role}{of}: writes are rejected and WAITAOF is not allowed on replicas",
                      f"connect to the primary{' (' + f.primary + ')' if f.primary else ''}")


def loading(c: Context) -> Iterator[Finding]:
    f = c.facts
    unknown = _unknown_in_info(c, "loading", f.loading, "cannot tell whether the server is still loading",
                               "INFO reports no loading state", "retry once INFO persistence answers")
    if unknown is not None:
        yield unknown
    elif f.loading:
        yield Finding("loading", "refuse", "server is still loading its dataset (loading:1)",
                      "wait until INFO persistence shows loading:0, then retry")
    else:
        yield Finding("loading", "ok", "dataset loaded")


def aof_write_status(c: Context) -> Iterator[Finding]:
    st = c.facts.aof_last_write_status
    unknown = _unknown_in_info(c, "aof-write-status", st, "cannot read aof_last_write_status",
                               "INFO reports no aof_last_write_status", "use a server whose INFO has a persistence section")
    if unknown is not None:
        yield unknown
    elif st.lower() != "ok":  # type: ignore[union-attr]
        yield Finding("aof-write-status", "refuse", f"the last AOF write failed (aof_last_write_status:{st})",
                      "check the server log and the disk (space, permissions); writes fail until it recovers")
    else:
        yield Finding("aof-write-status", "ok", "last AOF write succeeded")


def waitaof(c: Context) -> Iterator[Finding]:
    f = c.facts
    if f.has_waitaof is False:
        yield Finding("waitaof", "refuse",
                      f"{f.engine} {f.version or '?'} has no WAITAOF command, so a commit cannot wait for its AOF fsync",
                      "upgrade to Redis >= 7.2 or Valkey >= 7.2")
    elif f.has_waitaof is None:
        if f.live_ran and f.live_error is None and (f.live_local or 0) >= 1:
            yield Finding("waitaof", "ok", f"WAITAOF answered the live write (COMMAND INFO unavailable: {f.waitaof_error})")
        else:
            yield Finding("waitaof", "unverifiable",
                          f"cannot tell whether WAITAOF exists: COMMAND INFO failed ({f.waitaof_error or 'no reply'})",
                          "allow COMMAND INFO for this user (ACL +command|info)")
    else:
        yield Finding("waitaof", "ok", "WAITAOF is available")


# --------------------------------------------------------------------------- settings


def settings(c: Context) -> Iterator[Finding]:
    for key, (good, rule) in SETTING_RULES.items():
        value, src = c.setting(key)
        if value is None:
            yield Finding(key, "unverifiable", c.why_unknown(key), _unknown_remedy(key, good))
        else:
            yield rule(value, src, c.facts.engine)


def aof_load_truncated(c: Context) -> Iterator[Finding]:
    if c.facts.engine == "valkey":
        return
    lt, src = c.setting("aof-load-truncated")
    if lt is None:
        yield Finding("aof-load-truncated", "warn",
                      c.why_unknown("aof-load-truncated") + " (a torn AOF tail may be half-replayed on restart)",
                      "make sure the server runs `aof-load-truncated no`")
    elif lt == "yes":
        yield Finding("aof-load-truncated", "warn",
                      "aof-load-truncated yes on Redis: after a torn AOF tail and a second restart, "
                      "Redis can replay half a MULTI (measured on 8.2.3)",
                      set_remedy("aof-load-truncated", "no") +
                      " (a torn AOF then stops startup; repair it with redis-check-aof)")
    else:
        yield Finding("aof-load-truncated", "ok", f"aof-load-truncated {lt} ({src})")


# --------------------------------------------------------------------------- replicas


def replicas(c: Context) -> Iterator[Finding]:
    f, d = c.facts, c.durability
    online, need = f.replicas_online, d.replicas
    if not need:
        return
    if online is None:
        yield Finding("replicas", "unverifiable",
                      f"policy {d.label} needs {need} replica(s) but the replica count is unknown",
                      "allow INFO for this user (ACL +info)")
    elif online < need:
        yield Finding("replicas", "refuse",
                      f"policy {d.label} needs {need} AOF-enabled replica(s); {online} online",
                      f"attach {need - online} more replica(s) with `appendonly yes` / `appendfsync always`, "
                      "or lower the policy's replicas")
    elif f.live_ran and f.live_error is None and f.live_replicas is not None \
            and f.live_replicas < f.live_replicas_asked:
        yield Finding("replicas", "refuse",
                      f"only {f.live_replicas} of {f.live_replicas_asked} replica(s) confirmed an AOF fsync "
                      f"of the live write within {f.live_timeout_ms} ms (a replica without AOF never does)",
                      "set `appendonly yes` and `appendfsync always` on the replicas")
    else:
        yield Finding("replicas", "ok", f"{online} replica(s) online, {need} needed")


def min_replicas_to_write(c: Context) -> Iterator[Finding]:
    online = c.facts.replicas_online
    if not online:
        return
    mr, src = c.setting("min-replicas-to-write")
    if mr is None:
        yield Finding("min-replicas-to-write", "warn", c.why_unknown("min-replicas-to-write"),
                      "make sure the server runs `min-replicas-to-write 1` or more")
    elif mr == "0":
        yield Finding("min-replicas-to-write", "warn",
                      f"min-replicas-to-write 0 with {online} replica(s): a primary cut off from its replicas "
                      "keeps accepting commits that a failover then loses",
                      set_remedy("min-replicas-to-write", "1") + " (with min-replicas-max-lag)")
    else:
        yield Finding("min-replicas-to-write", "ok", f"min-replicas-to-write {mr} ({src})")


def evicted_keys(c: Context) -> Iterator[Finding]:
    n = c.facts.evicted_keys
    if n:
        yield Finding("evicted-keys", "warn",
                      f"the server has evicted {n} key(s) since it started: checkpoints may be gone",
                      "run `maxmemory-policy noeviction` with enough maxmemory, and check the runs' events")


#: the share of maxmemory from which the probe (and ``check``) warns
MEMORY_WARN_SHARE = 0.8


def memory(c: Context) -> Iterator[Finding]:
    """used_memory against maxmemory: under noeviction a full server fails every commit."""
    used, limit = c.facts.used_memory, c.facts.maxmemory
    if used is None or limit is None:
        return
    mib = f"used_memory {used / 2**20:.1f} MiB"
    if not limit:
        yield Finding("memory", "ok", f"{mib}, no maxmemory (limited by the machine)")
    elif used / limit < MEMORY_WARN_SHARE:
        yield Finding("memory", "ok", f"{mib} of maxmemory {limit / 2**20:.1f} MiB ({used / limit:.0%})")
    else:
        yield Finding("memory", "warn", f"{mib} of maxmemory {limit / 2**20:.1f} MiB ({used / limit:.0%}): "
                      "under noeviction every commit fails with OOM once it is full",
                      "raise maxmemory, or remove idle runs (redis-ckpt prune --idle 7d; a store retention)")


# --------------------------------------------------------------------------- cluster, live write


def cluster(c: Context) -> Iterator[Finding]:
    f = c.facts
    if not f.cluster_enabled:
        return
    if f.cluster_error is not None:
        yield Finding("cluster-state", "unverifiable", f"CLUSTER INFO failed ({f.cluster_error})",
                      "allow CLUSTER INFO for this user")
        return
    if f.cluster_state != "ok":
        yield Finding("cluster-state", "refuse", f"cluster_state is {f.cluster_state!r}: the cluster is not serving",
                      "repair the cluster (redis-cli --cluster check/fix) until cluster_state:ok")
    else:
        yield Finding("cluster-state", "ok", "cluster_state ok")
    n = f.cluster_slots_assigned
    if n is None or n < CLUSTER_SLOTS:
        yield Finding("cluster-slots", "refuse",
                      f"only {n if n is not None else '?'} of {CLUSTER_SLOTS} hash slots are assigned: "
                      "runs in the others cannot be stored",
                      "assign every slot (redis-cli --cluster fix, or CLUSTER ADDSLOTSRANGE)")
    else:
        yield Finding("cluster-slots", "ok", f"all {CLUSTER_SLOTS} slots assigned")


def live_write(c: Context) -> Iterator[Finding]:
    f = c.facts
    if not f.live_ran:
        return
    if f.live_error is not None:
        yield Finding("live-waitaof", "refuse", f"the live write check failed: {f.live_error}",
                      "make sure this user may SET keys in the namespace and run WAITAOF")
    elif f.live_local is None or f.live_local < 1:
        yield Finding("live-waitaof", "refuse",
                      f"WAITAOF did not confirm the live write's local AOF fsync within {f.live_timeout_ms} ms",
                      "check appendonly/appendfsync and the disk the AOF is on")
    else:
        took = f" in {f.live_ms:.1f} ms" if f.live_ms is not None else ""
        yield Finding("live-waitaof", "ok", f"a live write was fsynced to the AOF{took}")


def declared_config(c: Context) -> Iterator[Finding]:
    """Where the settings came from: a declaration used, or one the server contradicts
    (after every rule that reads a setting)."""
    if c.used_declared:
        keys = ", ".join(f"{k}={c.declared[k]}" for k in c.used_declared) if c.declared else ""
        yield Finding("config", "warn",
                      f"server config was declared, not read ({c.facts.config_error or 'CONFIG unavailable'}): "
                      f"trusting the declaration {keys}",
                      "keep the declaration in step with the server's real configuration")
    for key, dv, value, source in c.mismatches:
        yield Finding("config", "warn", f"declared {key}={dv} but the server reports {key}={value} ({source}); "
                      "the server's value was used", "fix the declaration")


#: every rule, in the order its findings are reported
RULES: tuple[Rule, ...] = (
    role, loading, aof_write_status, waitaof, settings, aof_load_truncated,
    replicas, min_replicas_to_write, evicted_keys, memory, cluster, live_write, declared_config,
)


def evaluate(facts: ServerFacts, durability: Durability, declared: Mapping[str, Any] | None = None) -> list[Finding]:
    """Every rule of the startup probe over ``facts``. Pure: no I/O.

    A server nothing else refuses is still not ok without its live write check.
    """
    c = Context(facts, durability, normalize_declared(declared))
    out = [finding for rule in RULES for finding in rule(c)]
    if not facts.live_ran and not any(f.refuses for f in out):
        out.append(Finding("live-waitaof", "unverifiable",
                           f"the live write check did not run ({facts.live_skipped or 'no reason given'})",
                           "run the full probe"))
    return out
