"""The four settings that refuse a server, one rule each, and the drift check that re-reads them.

A setting's rule judges one value (as CONFIG GET, INFO or the operator's declaration gives it)
on one engine. The startup probe applies :data:`SETTING_RULES` through the ``settings`` rule
of :mod:`.rules`; a store re-reads :data:`DRIFT_KEYS` with every confirmed write, and
:func:`drift_problems` judges them by the same rules, not by a copy of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .facts import normalize_config
from .report import Finding

__all__ = ["SettingRule", "SETTING_RULES", "DRIFT_KEYS", "drift_problems", "set_remedy"]

_CONF_HINT = "(redis.conf) or CONFIG SET"


def set_remedy(name: str, value: str) -> str:
    return f"set `{name} {value}` {_CONF_HINT} {name} {value}"


#: one setting's rule: (its value, where the value came from, the engine) -> its finding
SettingRule = Callable[[str, str, str], Finding]


def appendonly_rule(value: str, src: str, engine: str) -> Finding:
    if value != "yes":
        return Finding("appendonly", "refuse", f"appendonly is {value!r}: nothing is written to the AOF",
                       set_remedy("appendonly", "yes"))
    return Finding("appendonly", "ok", f"appendonly yes ({src})")


def appendfsync_rule(value: str, src: str, engine: str) -> Finding:
    if value == "always":
        return Finding("appendfsync", "ok", f"appendfsync always ({src})")
    if value == "no":
        return Finding("appendfsync", "refuse",
                       "appendfsync is 'no': the server never fsyncs the AOF itself, WAITAOF cannot confirm",
                       set_remedy("appendfsync", "always"))
    if value == "everysec" and engine == "redis":
        return Finding("appendfsync", "warn",
                       "appendfsync everysec on Redis: every commit waits up to ~1 s for the once-a-second fsync",
                       set_remedy("appendfsync", "always") + " for ~1 ms commits")
    if value == "everysec":
        what = "on Valkey" if engine == "valkey" else f"on an unidentified engine ({engine})"
        return Finding("appendfsync", "refuse",
                       f"appendfsync everysec {what}: WAITAOF confirms before the fsync happens "
                       "(Valkey 9.1.2, same bug as redis#13793), so a confirmed commit can be lost",
                       set_remedy("appendfsync", "always"))
    return Finding("appendfsync", "refuse", f"appendfsync has an unknown value {value!r}",
                   set_remedy("appendfsync", "always"))


def no_appendfsync_on_rewrite_rule(value: str, src: str, engine: str) -> Finding:
    if value != "no":
        return Finding("no-appendfsync-on-rewrite", "refuse",
                       f"no-appendfsync-on-rewrite is {value!r}: fsync silently stops while the AOF is rewritten",
                       set_remedy("no-appendfsync-on-rewrite", "no"))
    return Finding("no-appendfsync-on-rewrite", "ok", f"no-appendfsync-on-rewrite no ({src})")


def maxmemory_policy_rule(value: str, src: str, engine: str) -> Finding:
    if value != "noeviction":
        return Finding("maxmemory-policy", "refuse",
                       f"maxmemory-policy is {value!r}: the server may evict acknowledged checkpoints and leases "
                       "(measured: allkeys-lru dropped 195 of 300, volatile-lru evicted leases)",
                       set_remedy("maxmemory-policy", "noeviction"))
    return Finding("maxmemory-policy", "ok", f"maxmemory-policy noeviction ({src})")


#: the settings that refuse a server, in the order they are reported: key -> (the durable
#: value, its rule). A value that cannot be learned (nor declared) is unverifiable.
SETTING_RULES: dict[str, tuple[str, SettingRule]] = {
    "appendonly": ("yes", appendonly_rule),
    "appendfsync": ("always", appendfsync_rule),
    "no-appendfsync-on-rewrite": ("no", no_appendfsync_on_rewrite_rule),
    "maxmemory-policy": ("noeviction", maxmemory_policy_rule),
}


# --------------------------------------------------------------------------- drift


#: the settings a store re-reads with every confirmed write (same pipeline, same connection);
#: ``appendonly no`` needs no re-read: WAITAOF itself then fails
DRIFT_KEYS = ("appendfsync", "maxmemory-policy", "no-appendfsync-on-rewrite")


def drift_problems(config: Any, engine: str) -> list[str]:
    """The refusals among ``config`` (a CONFIG GET reply of DRIFT_KEYS), for a server that
    passed the probe: the probe's own :data:`SETTING_RULES`, one line each with its remedy."""
    values = normalize_config(config)
    return [str(finding) for key, (_, rule) in SETTING_RULES.items() if key in values
            for finding in [rule(values[key], "CONFIG", engine)] if finding.refuses]
