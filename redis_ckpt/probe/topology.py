"""The probe of a whole topology as one plan: one server, every primary of a Redis Cluster,
or the primary a Sentinel names — with, when the policy counts on replicas, every replica.

A flow whose requests are nodes: :func:`probe_plan` yields one :class:`NodeProbe` per node
(a :func:`~redis_ckpt.probe.flow.probe_flow` to run on that node's own connection) and
receives that flow's report — or, thrown in, :class:`~redis_ckpt.core.ops.ConnectionLost`
when the node cannot be reached. :mod:`redis_ckpt.drivers.probe` finds the nodes and drives
the plan and each node's flow on the one trampoline.

One server: the one report, as the flow made it; a connection error ends the probe.
Cluster / Sentinel: one report named by the topology's label, each finding prefixed with
its node's address; a node that cannot be reached is a finding (an unreachable primary is
``unverifiable``, a replica a warning), not the end of the probe.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.durability import Durability
from ..core.ops import ConnectionLost, Flow
from .facts import CLUSTER_SLOTS, error_text
from .flow import probe_flow
from .report import Finding, ProbeReport

__all__ = [
    "NodeSpec", "NodeProbe", "Topology", "probe_plan", "cluster_notes", "sentinel_notes", "REPLICA_CHECKS",
]

#: checks of a replica's own probe that still matter once it is promoted
REPLICA_CHECKS = frozenset({
    "loading", "aof-write-status", "waitaof", "appendonly", "appendfsync", "no-appendfsync-on-rewrite",
    "maxmemory-policy", "aof-load-truncated", "evicted-keys", "config",
})


@dataclass(frozen=True)
class NodeSpec:
    """One node to probe: ``handle`` is the driver's (a ClusterNode, an address...)."""

    handle: Any
    name: str
    probe_key: str | None = None
    replicas: tuple[NodeSpec, ...] = ()


@dataclass(frozen=True)
class Topology:
    """The primaries to probe (each with its replicas) and what their discovery found."""

    primaries: Sequence[NodeSpec]
    notes: Sequence[Finding] = ()


@dataclass(frozen=True)
class NodeProbe:
    """Run ``flow`` (a ``probe_flow``) on the connection of ``handle``; send back its report,
    or throw in ``ConnectionLost`` when the node cannot be reached."""

    handle: Any
    flow: Flow[ProbeReport]


Plan = Generator[NodeProbe, Any, ProbeReport]



def probe_plan(label: str, topology: Topology | None, *, namespace: str, durability: Durability,
               declared: Mapping[str, str] | None) -> Plan:
    """The probe of ``topology`` (None: the one server the driver's client talks to, whose
    handle is None)."""
    if topology is None:
        return (yield NodeProbe(None, probe_flow(server=label, namespace=namespace, durability=durability,
                                                 declared=declared)))
    return (yield from _topology_plan(label, topology, namespace=namespace, durability=durability, declared=declared))


def _topology_plan(label: str, topology: Topology, *, namespace: str, durability: Durability,
                   declared: Mapping[str, str] | None) -> Plan:
    """Probe every primary (its own probe key, the policy's replica count) and, when the
    policy counts on replicas, every replica's own settings; one report, each finding
    prefixed with its node's address, holding one report per primary too (``nodes``)."""
    findings = list(topology.notes)
    reports: list[ProbeReport] = []
    nodes: list[ProbeReport] = []  # one per primary, reached or not
    replica_policy = Durability(timeout_ms=durability.timeout_ms)
    for p in topology.primaries:
        try:
            got = yield NodeProbe(p.handle, probe_flow(server=p.name, namespace=namespace, durability=durability,
                                                       declared=declared, probe_key=p.probe_key))
        except ConnectionLost as exc:
            # no answer from it (refused, or silent past the timeout) says nothing of its
            # durability: unverifiable, as one server that cannot be reached (exit 2, not 1)
            lost = Finding("reachable", "unverifiable", f"cannot reach this primary: {error_text(exc)}",
                           "bring the node back (or let it fail over) and make sure this client reaches it")
            findings.append(_at(p.name, lost))
            nodes.append(ProbeReport(server=p.name, engine="unknown", version="", findings=[lost]))
            continue
        reports.append(got)
        findings.extend(_at(p.name, f) for f in got.findings)
        own = list(got.findings)  # the node's report: its own findings, then its replicas'
        for r in p.replicas if durability.replicas else ():
            where = f"{r.name} (replica of {p.name})"
            try:
                got_r = yield NodeProbe(r.handle, probe_flow(server=r.name, namespace=namespace,
                                                             durability=replica_policy, declared=declared))
            except ConnectionLost as exc:
                replica = [Finding("replica", "warn", f"{where}: cannot reach it: {error_text(exc)}",
                                   "check the replica; the primary's replica count decides")]
            else:
                replica = _replica_findings(where, got_r)
            findings.extend(replica)
            own.extend(replica)
        unlisted = _unlisted_replicas(p, got) if durability.replicas else []
        findings.extend(unlisted)
        own.extend(unlisted)
        nodes.append(ProbeReport(server=p.name, engine=got.engine, version=got.version, findings=own,
                                 facts=got.facts))
    engines = sorted({r.engine for r in reports}) or ["unknown"]
    versions = sorted({r.version for r in reports if r.version})
    return ProbeReport(
        server=label,
        engine=engines[0] if len(engines) == 1 else "mixed(" + ",".join(engines) + ")",
        version=",".join(versions),
        findings=findings,
        facts=reports[0].facts if len(topology.primaries) == 1 and reports else None,
        nodes=tuple(nodes),
        notes=tuple(topology.notes),
    )


def _unlisted_replicas(p: NodeSpec, report: ProbeReport) -> list[Finding]:
    """The primary counts more online replicas than the topology lists (Redis leaves a replica
    out of CLUSTER SLOTS until it has synced data: a cluster just formed, nothing written yet;
    a Sentinel that has not met it): the policy may count on replicas whose settings were not
    checked. A warning (the store still starts: its first writes are what gets them listed)."""
    online = report.facts.replicas_online if report.facts is not None else None
    missing = (online or 0) - len(p.replicas)
    if missing <= 0:
        return []
    return [Finding("replica", "warn", f"{p.name}: {missing} online replica(s) not listed by the topology "
                    "(a replica not yet synced since the cluster formed is left out of CLUSTER SLOTS): "
                    "their settings were not checked",
                    "run the check again once they are listed (after the first writes to their primary)")]


def _at(where: str, f: Finding, level: str | None = None) -> Finding:
    return Finding(f.check, level or f.level, f"{where}: {f.message}", f.remedy)  # type: ignore[arg-type]


def _replica_findings(where: str, report: ProbeReport) -> list[Finding]:
    out: list[Finding] = []
    facts = report.facts
    role = facts.role if facts is not None else None
    if role in ("master", "primary"):
        out.append(Finding("replica-role", "warn", f"{where}: reports role {role} (a failover in progress?)",
                           "run the check again once the topology has settled"))
    elif role:
        out.append(Finding("replica-role", "ok", f"{where}: {role} of {facts.primary or '?'}"))  # type: ignore[union-attr]
    for f in report.findings:
        if f.check not in REPLICA_CHECKS:
            continue
        # a replica still loading (full sync) is not yet counted online by its primary, whose
        # replica check decides; everything else it would carry into a promotion refuses
        out.append(_at(where, f, "warn" if f.check == "loading" and f.level == "refuse" else None))
    return out


def cluster_notes(primaries: int, covered: int, replicas: int) -> list[Finding]:
    """What the client's slot map says: ``primaries`` own ``covered`` slots, with ``replicas``."""
    if not primaries:
        return [Finding("cluster-topology", "refuse", "the cluster's slot map has no primary",
                        "assign the slots (redis-cli --cluster create / fix)")]
    if covered < CLUSTER_SLOTS:
        return [Finding("cluster-topology", "refuse",
                        f"the slot map covers {covered} of {CLUSTER_SLOTS} slots: runs in the others cannot be stored",
                        "assign every slot (redis-cli --cluster fix, or CLUSTER ADDSLOTSRANGE)")]
    return [Finding("cluster-topology", "ok",
                    f"{primaries} primaries own all {CLUSTER_SLOTS} slots; {replicas} replica(s)")]


def sentinel_notes(service: str, primary: str, replicas: Sequence[str]) -> list[Finding]:
    """What Sentinel says: ``primary`` (host:port) serves ``service``, with ``replicas``."""
    return [Finding("sentinel", "ok",
                    f"Sentinel names {primary} the primary of {service!r}, with "
                    f"{len(replicas)} replica(s): {', '.join(replicas) or '-'}")]
