"""The startup probe's rules, fed with hand-made facts: no server, no driver.

One test per refusal and per warning (:func:`evaluate`), the drift check every commit runs
(the same setting rules), and the plan that probes a Cluster or Sentinel set-up node by node
(:mod:`redis_ckpt.probe.topology`), fed with scripted node reports.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from redis_ckpt.core.durability import Durability
from redis_ckpt.core.ops import ConnectionLost
from redis_ckpt.drivers.sync import PlanTarget, drive
from redis_ckpt.errors import NonDurableServerError
from redis_ckpt.probe import Finding, ProbeReport, ServerFacts, drift_problems, evaluate, facts_from_info
from redis_ckpt.probe.flow import probe_flow
from redis_ckpt.probe.settings import DRIFT_KEYS, SETTING_RULES
from redis_ckpt.probe.topology import (
    NodeProbe,
    NodeSpec,
    Topology,
    cluster_notes,
    probe_plan,
    sentinel_notes,
)

LOCAL = Durability()
GOOD_CONFIG = {
    "appendonly": "yes",
    "appendfsync": "always",
    "no-appendfsync-on-rewrite": "no",
    "maxmemory-policy": "noeviction",
    "aof-load-truncated": "no",
    "min-replicas-to-write": "0",
}


# --------------------------------------------------------------------------- helpers


def healthy(engine: str = "valkey", **over: Any) -> ServerFacts:
    """Facts of a server that passes every check; ``config_<key>=`` overrides one setting."""
    config = dict(GOOD_CONFIG)
    for k in list(over):
        if k.startswith("config_"):
            config[k[len("config_"):].replace("_", "-")] = over.pop(k)
    base: dict[str, Any] = dict(
        engine=engine,
        version="9.1.2" if engine == "valkey" else "8.2.3",
        role="master",
        loading=False,
        aof_enabled=True,
        aof_last_write_status="ok",
        maxmemory_policy="noeviction",
        evicted_keys=0,
        replicas_online=0,
        config=config,
        has_waitaof=True,
        live_ran=True,
        live_local=1,
        live_replicas=0,
        live_replicas_asked=0,
        live_timeout_ms=5000,
        live_ms=0.4,
    )
    base.update(over)
    return ServerFacts(**base)


def by_check(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


def level_of(findings: list[Finding], check: str) -> str:
    found = by_check(findings, check)
    assert len(found) == 1, f"expected one {check!r} finding, got {found}"
    return found[0].level


def not_ok(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level != "ok"]


# --------------------------------------------------------------------------- every rule


class TestEvaluate:
    def test_healthy_valkey_has_no_warning_or_refusal(self) -> None:
        findings = evaluate(healthy("valkey"), LOCAL)
        assert not_ok(findings) == []
        assert level_of(findings, "live-waitaof") == "ok"

    def test_healthy_redis_with_aof_load_truncated_no(self) -> None:
        assert not_ok(evaluate(healthy("redis"), LOCAL)) == []

    def test_no_waitaof(self) -> None:
        f = by_check(evaluate(healthy("redis", version="7.0.15", has_waitaof=False, live_ran=False), LOCAL), "waitaof")
        assert f[0].level == "refuse"
        assert "WAITAOF" in f[0].message and "7.0.15" in f[0].message
        assert "7.2" in f[0].remedy

    def test_waitaof_unknown_but_live_write_confirmed(self) -> None:
        facts = healthy(has_waitaof=None, waitaof_error="NOPERM")
        assert level_of(evaluate(facts, LOCAL), "waitaof") == "ok"

    def test_waitaof_unknown_and_no_live_write(self) -> None:
        facts = healthy(has_waitaof=None, waitaof_error="NOPERM", live_ran=False)
        assert level_of(evaluate(facts, LOCAL), "waitaof") == "unverifiable"

    @pytest.mark.parametrize("role", ["slave", "replica"])
    def test_replica_refused(self, role: str) -> None:
        f = by_check(evaluate(healthy(role=role, primary="10.0.0.1:6379", live_ran=False), LOCAL), "role")[0]
        assert f.level == "refuse"
        assert "primary" in f.remedy and "10.0.0.1:6379" in f.remedy

    def test_loading_refused(self) -> None:
        f = by_check(evaluate(healthy(loading=True), LOCAL), "loading")[0]
        assert f.level == "refuse" and "loading:0" in f.remedy

    def test_last_aof_write_failed(self) -> None:
        f = by_check(evaluate(healthy(aof_last_write_status="err"), LOCAL), "aof-write-status")[0]
        assert f.level == "refuse" and "aof_last_write_status:err" in f.message and "disk" in f.remedy

    def test_appendonly_no(self) -> None:
        f = by_check(evaluate(healthy(config_appendonly="no", aof_enabled=False), LOCAL), "appendonly")[0]
        assert f.level == "refuse" and "appendonly yes" in f.remedy

    def test_appendonly_from_info_when_config_is_hidden(self) -> None:
        facts = healthy(config=None, config_error="unknown command 'CONFIG'", aof_enabled=False)
        assert level_of(evaluate(facts, LOCAL), "appendonly") == "refuse"

    def test_appendfsync_no(self) -> None:
        f = by_check(evaluate(healthy(config_appendfsync="no"), LOCAL), "appendfsync")[0]
        assert f.level == "refuse" and "appendfsync always" in f.remedy

    def test_everysec_refused_on_valkey(self) -> None:
        f = by_check(evaluate(healthy("valkey", config_appendfsync="everysec"), LOCAL), "appendfsync")[0]
        assert f.level == "refuse" and "before the fsync" in f.message and "appendfsync always" in f.remedy

    def test_everysec_only_warned_on_redis(self) -> None:
        findings = evaluate(healthy("redis", config_appendfsync="everysec"), LOCAL)
        f = by_check(findings, "appendfsync")[0]
        assert f.level == "warn" and "1 s" in f.message and "appendfsync always" in f.remedy
        assert [x.level for x in not_ok(findings)] == ["warn"]

    def test_everysec_refused_on_unknown_engine(self) -> None:
        assert level_of(evaluate(healthy("unknown", config_appendfsync="everysec"), LOCAL), "appendfsync") == "refuse"

    def test_unknown_appendfsync_value(self) -> None:
        assert level_of(evaluate(healthy(config_appendfsync="sometimes"), LOCAL), "appendfsync") == "refuse"

    def test_no_appendfsync_on_rewrite_yes(self) -> None:
        f = by_check(evaluate(healthy(config_no_appendfsync_on_rewrite="yes"), LOCAL), "no-appendfsync-on-rewrite")[0]
        assert f.level == "refuse" and "no-appendfsync-on-rewrite no" in f.remedy

    @pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-random", "volatile-ttl", "allkeys-lfu"])
    def test_eviction_policies_refused(self, policy: str) -> None:
        facts = healthy(config_maxmemory_policy=policy, maxmemory_policy=policy)
        f = by_check(evaluate(facts, LOCAL), "maxmemory-policy")[0]
        assert f.level == "refuse" and policy in f.message and "maxmemory-policy noeviction" in f.remedy

    def test_maxmemory_policy_from_info_when_config_is_hidden(self) -> None:
        facts = healthy(config=None, config_error="NOPERM", maxmemory_policy="allkeys-lru")
        assert level_of(evaluate(facts, LOCAL), "maxmemory-policy") == "refuse"

    def test_aof_load_truncated_warned_on_redis_only(self) -> None:
        f = by_check(evaluate(healthy("redis", config_aof_load_truncated="yes"), LOCAL), "aof-load-truncated")[0]
        assert f.level == "warn" and "aof-load-truncated no" in f.remedy
        assert by_check(evaluate(healthy("valkey", config_aof_load_truncated="yes"), LOCAL), "aof-load-truncated") == []

    def test_min_replicas_to_write_zero_with_replicas(self) -> None:
        f = by_check(evaluate(healthy(replicas_online=1), LOCAL), "min-replicas-to-write")[0]
        assert f.level == "warn" and "min-replicas-to-write 1" in f.remedy
        assert level_of(evaluate(healthy(replicas_online=1, config_min_replicas_to_write="1"), LOCAL),
                        "min-replicas-to-write") == "ok"
        assert by_check(evaluate(healthy(replicas_online=0), LOCAL), "min-replicas-to-write") == []

    def test_evicted_keys_warned(self) -> None:
        f = by_check(evaluate(healthy(evicted_keys=12), LOCAL), "evicted-keys")[0]
        assert f.level == "warn" and "12" in f.message and "noeviction" in f.remedy

    def test_too_few_replicas(self) -> None:
        pol = Durability.replicas_received(2)
        f = by_check(evaluate(healthy(replicas_online=1, live_ran=False, live_skipped="refused"), pol), "replicas")[0]
        assert f.level == "refuse" and "2" in f.message and "1 online" in f.message and "appendonly yes" in f.remedy

    def test_replica_without_aof_does_not_confirm(self) -> None:
        pol = Durability.replicas_received(1, timeout_ms=1500)
        facts = healthy(replicas_online=1, live_replicas=0, live_replicas_asked=1, live_timeout_ms=1500)
        f = by_check(evaluate(facts, pol), "replicas")[0]
        assert f.level == "refuse" and "0 of 1" in f.message and "appendonly yes" in f.remedy

    def test_enough_aof_replicas(self) -> None:
        pol = Durability.replicas_fsynced(1)
        facts = healthy(replicas_online=1, live_replicas=1, live_replicas_asked=1, config_min_replicas_to_write="1")
        assert not_ok(evaluate(facts, pol)) == []

    def test_replicas_unknown_without_info(self) -> None:
        facts = healthy(info_error="NOPERM", role=None, loading=None, aof_last_write_status=None, replicas_online=None)
        findings = evaluate(facts, Durability.replicas_received(1))
        for check in ("role", "loading", "aof-write-status", "replicas"):
            assert level_of(findings, check) == "unverifiable", check
        assert "INFO is unavailable" in by_check(findings, "role")[0].message

    def test_live_write_error(self) -> None:
        f = by_check(evaluate(healthy(live_local=None, live_error="SET x: NOPERM"), LOCAL), "live-waitaof")[0]
        assert f.level == "refuse" and "NOPERM" in f.message

    def test_live_write_not_confirmed(self) -> None:
        f = by_check(evaluate(healthy(live_local=0, live_timeout_ms=300), LOCAL), "live-waitaof")[0]
        assert f.level == "refuse" and "300 ms" in f.message

    def test_live_write_missing_is_never_ok(self) -> None:
        findings = evaluate(healthy(live_ran=False, live_skipped="not run"), LOCAL)
        assert level_of(findings, "live-waitaof") == "unverifiable"

    def test_config_hidden_without_declaration(self) -> None:
        facts = healthy("redis", config=None, config_error="unknown command 'CONFIG'")
        findings = evaluate(facts, LOCAL)
        for check in ("appendfsync", "no-appendfsync-on-rewrite"):
            f = by_check(findings, check)[0]
            assert f.level == "unverifiable"
            assert "CONFIG GET is unavailable" in f.message and "declare" in f.remedy
        assert level_of(findings, "appendonly") == "ok"  # from INFO aof_enabled
        assert level_of(findings, "maxmemory-policy") == "ok"  # from INFO maxmemory_policy
        assert level_of(findings, "aof-load-truncated") == "warn"  # a warning-level check stays a warning

    def test_config_hidden_with_durable_declaration(self) -> None:
        facts = healthy("redis", config=None, config_error="unknown command 'CONFIG'")
        findings = evaluate(facts, LOCAL, declared=GOOD_CONFIG)
        assert [f.level for f in findings if f.level in ("refuse", "unverifiable")] == []
        note = by_check(findings, "config")[0]
        assert note.level == "warn" and "declared, not read" in note.message

    def test_config_hidden_with_bad_declaration(self) -> None:
        facts = healthy("valkey", config=None, config_error="NOPERM")
        findings = evaluate(facts, LOCAL, declared={**GOOD_CONFIG, "appendfsync": "everysec"})
        assert level_of(findings, "appendfsync") == "refuse"

    def test_observed_config_beats_declaration(self) -> None:
        findings = evaluate(healthy(config_appendfsync="no"), LOCAL, declared={"appendfsync": "always"})
        assert level_of(findings, "appendfsync") == "refuse"
        mismatch = by_check(findings, "config")[0]
        assert mismatch.level == "warn" and "appendfsync=always" in mismatch.message and "appendfsync=no" in mismatch.message

    def test_declaration_with_unknown_key_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="append_fsync"):
            evaluate(healthy(), LOCAL, declared={"append_fsync": "always"})
        with pytest.raises(ValueError, match="append_fsync"):
            probe_flow(server="s", namespace="n", durability=LOCAL, declared={"append_fsync": "always"})

    def test_cluster_state_and_slots(self) -> None:
        bad = evaluate(healthy(cluster_enabled=True, cluster_state="fail", cluster_slots_assigned=100), LOCAL)
        assert level_of(bad, "cluster-state") == "refuse"
        slots = by_check(bad, "cluster-slots")[0]
        assert slots.level == "refuse" and "100 of 16384" in slots.message and "ADDSLOTS" in slots.remedy
        good = evaluate(healthy(cluster_enabled=True, cluster_state="ok", cluster_slots_assigned=16384), LOCAL)
        assert not_ok(good) == []
        hidden = evaluate(healthy(cluster_enabled=True, cluster_error="NOPERM"), LOCAL)
        assert level_of(hidden, "cluster-state") == "unverifiable"

    def test_no_cluster_checks_off_cluster(self) -> None:
        findings = evaluate(healthy(), LOCAL)
        assert by_check(findings, "cluster-state") == [] and by_check(findings, "cluster-slots") == []


class TestFactsFromInfo:
    def test_valkey_is_told_apart_by_server_name(self) -> None:
        facts = facts_from_info({"server_name": "valkey", "redis_version": "7.2.4", "valkey_version": "9.1.2",
                                 "role": "master", "connected_slaves": 0})
        assert facts["engine"] == "valkey" and facts["version"] == "9.1.2"
        plain = facts_from_info({"redis_version": "7.2.4", "role": "master"})
        assert plain["engine"] == "redis" and plain["version"] == "7.2.4"

    def test_an_engine_is_taken_for_redis_only_when_nothing_says_otherwise(self) -> None:
        # an engine that names itself, or reports its own version, is not Redis: its rules
        # (everysec only warned) were measured on Redis alone; unidentified gets the strict ones
        for info in ({"server_name": "keydb", "redis_version": "6.3.4"},
                     {"redis_version": "7.4.0", "dragonfly_version": "df-v1.30.0"},
                     {"role": "master"}):
            assert facts_from_info(info)["engine"] == "unknown", info
        valkey = facts_from_info({"redis_version": "7.2.4", "valkey_version": "8.0.1"})
        assert valkey["engine"] == "valkey" and valkey["version"] == "8.0.1"
        redis = facts_from_info({"redis_version": "8.2.3", "gcc_version": "14.2.0", "role": "master"})
        assert redis["engine"] == "redis" and redis["version"] == "8.2.3"

    def test_only_online_replicas_count(self) -> None:
        facts = facts_from_info({
            "role": "master", "connected_slaves": 2,
            "slave0": {"ip": "127.0.0.1", "port": 1, "state": "online"},
            "slave1": {"ip": "127.0.0.1", "port": 2, "state": "wait_bgsave"},
        })
        assert facts["replicas_online"] == 1

    def test_replica(self) -> None:
        facts = facts_from_info({"role": "slave", "master_host": "127.0.0.1", "master_port": 6379})
        assert facts["role"] == "slave" and facts["primary"] == "127.0.0.1:6379" and facts["replicas_online"] == 0


class TestReport:
    def test_finding_is_one_line_with_its_remedy(self) -> None:
        f = Finding("appendfsync", "refuse", "appendfsync is 'no'", "set `appendfsync always`")
        assert str(f) == "appendfsync is 'no' — set `appendfsync always`"
        assert str(Finding("x", "ok", "fine")) == "fine"

    def test_refused_warnings_ok_and_raise(self) -> None:
        findings = [
            Finding("a", "ok", "fine"),
            Finding("b", "warn", "hmm", "do w"),
            Finding("c", "refuse", "bad", "do r"),
            Finding("d", "unverifiable", "unknown", "do u"),
        ]
        report = ProbeReport("redis://:***@h:1/0", "redis", "8.2.3", findings)
        assert [f.check for f in report.refused] == ["c", "d"]
        assert [f.check for f in report.warnings] == ["b"]
        assert not report.ok
        with pytest.raises(NonDurableServerError) as info:
            report.raise_if_refused()
        assert info.value.server == "redis://:***@h:1/0"
        assert [p.check for p in info.value.problems] == ["c", "d"]
        assert "bad — do r" in str(info.value) and "unknown — do u" in str(info.value)
        ProbeReport("s", "redis", "8", findings[:2]).raise_if_refused()  # warnings do not raise


class TestEveryUnknownFact:
    """What cannot be learned never passes: one finding each, refusing or warning."""

    def test_no_role_in_info(self) -> None:
        f = by_check(evaluate(healthy(role=None), LOCAL), "role")[0]
        assert f.level == "unverifiable" and "no role" in f.message and "replication section" in f.remedy

    def test_no_loading_state_in_info(self) -> None:
        f = by_check(evaluate(healthy(loading=None), LOCAL), "loading")[0]
        assert f.level == "unverifiable" and "no loading state" in f.message

    def test_no_aof_write_status_in_info(self) -> None:
        f = by_check(evaluate(healthy(aof_last_write_status=None), LOCAL), "aof-write-status")[0]
        assert f.level == "unverifiable" and "persistence section" in f.remedy

    @pytest.mark.parametrize(("key", "good"), [("appendonly", "yes"), ("appendfsync", "always"),
                                               ("no-appendfsync-on-rewrite", "no"),
                                               ("maxmemory-policy", "noeviction")])
    def test_a_refusing_setting_nobody_can_read(self, key: str, good: str) -> None:
        config = {k: v for k, v in GOOD_CONFIG.items() if k != key}  # CONFIG GET did not return it
        facts = healthy(config=config, aof_enabled=None, maxmemory_policy=None)
        f = by_check(evaluate(facts, LOCAL), key)[0]
        assert f.level == "unverifiable" and "returned nothing" in f.message
        assert f"'{key}': '{good}'" in f.remedy

    def test_min_replicas_to_write_unreadable_with_replicas(self) -> None:
        config = {k: v for k, v in GOOD_CONFIG.items() if k != "min-replicas-to-write"}
        f = by_check(evaluate(healthy(replicas_online=2, config=config), LOCAL), "min-replicas-to-write")[0]
        assert f.level == "warn" and "min-replicas-to-write 1" in f.remedy

    def test_cluster_slots_unknown(self) -> None:
        facts = healthy(cluster_enabled=True, cluster_state="ok", cluster_slots_assigned=None)
        f = by_check(evaluate(facts, LOCAL), "cluster-slots")[0]
        assert f.level == "refuse" and "only ? of 16384" in f.message

    def test_unknown_facts_refuse_the_report(self) -> None:
        report = ProbeReport("s", "unknown", "", evaluate(ServerFacts(), LOCAL))
        assert not report.ok and {f.level for f in report.refused} == {"unverifiable"}


class TestDrift:
    """The settings re-read with every commit are judged by the probe's own rules."""

    @pytest.mark.parametrize(("key", "value", "engine"), [
        ("appendfsync", "no", "redis"),
        ("appendfsync", "everysec", "valkey"),
        ("appendfsync", "everysec", "unknown"),
        ("maxmemory-policy", "allkeys-lru", "redis"),
        ("maxmemory-policy", "volatile-lru", "valkey"),
        ("no-appendfsync-on-rewrite", "yes", "redis"),
        ("appendonly", "no", "valkey"),
    ])
    def test_a_refusing_value_is_a_drift_problem_in_the_probes_words(self, key: str, value: str,
                                                                      engine: str) -> None:
        problems = drift_problems({**{k: GOOD_CONFIG[k] for k in DRIFT_KEYS}, key: value}, engine)
        facts = healthy(engine, **{f"config_{key.replace('-', '_')}": value}, maxmemory_policy=None, aof_enabled=None)
        refused = [str(f) for f in evaluate(facts, LOCAL) if f.check == key]
        assert problems == refused and len(problems) == 1 and value in problems[0]

    def test_what_only_warns_is_no_drift_problem(self) -> None:
        assert drift_problems({"appendfsync": "everysec"}, "redis") == []
        assert drift_problems({k: GOOD_CONFIG[k] for k in DRIFT_KEYS}, "valkey") == []

    def test_a_reply_as_the_server_sends_it(self) -> None:
        flat = [b"appendfsync", b"no", b"maxmemory-policy", b"noeviction"]  # RESP2 without callbacks
        assert len(drift_problems(flat, "valkey")) == 1 and "appendfsync" in drift_problems(flat, "valkey")[0]
        assert drift_problems({}, "valkey") == []

    def test_every_drift_key_has_a_probe_rule(self) -> None:
        assert set(DRIFT_KEYS) <= set(SETTING_RULES)


# --------------------------------------------------------------------------- the topology plan


def node_report(name: str, engine: str = "valkey", **over: Any) -> ProbeReport:
    facts = healthy(engine, **over)
    return ProbeReport(name, engine, facts.version, evaluate(facts, LOCAL), facts)


def run_plan(plan: Any, answers: dict[str, Any]) -> tuple[ProbeReport, list[NodeProbe]]:
    """Drive a probe plan on the drivers' trampoline: each node's answer is a report, or an
    exception (``ConnectionLost``: the node is unreachable) thrown into the plan."""
    asked: list[NodeProbe] = []

    def probe_node(req: NodeProbe, until: float | None) -> ProbeReport:
        asked.append(req)
        req.flow.close()
        answer = answers[req.handle]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return drive(plan, PlanTarget(probe_node)), asked


SHARDS = Topology(
    [NodeSpec("a", "h:1", "ns:probe:{a}", (NodeSpec("a1", "h:11"),)), NodeSpec("b", "h:2", "ns:probe:{b}")],
    cluster_notes(2, 16384, 1),
)


class TestTopologyPlan:
    def plan(self, topology: Topology | None, durability: Durability = LOCAL) -> Any:
        return probe_plan("redis+cluster://h:1", topology, namespace="ns", durability=durability, declared=None)

    def test_one_server_is_its_own_report(self) -> None:
        report = node_report("redis://h:1/0")
        got, asked = run_plan(self.plan(None), {None: report})
        assert got is report and [r.handle for r in asked] == [None]

    def test_one_unreachable_server_ends_the_probe(self) -> None:
        with pytest.raises(ConnectionLost, match="refused"):
            run_plan(self.plan(None), {None: ConnectionLost("refused")})

    def test_every_primary_by_address_and_no_replica_for_a_local_policy(self) -> None:
        got, asked = run_plan(self.plan(SHARDS), {"a": node_report("h:1"), "b": node_report("h:2")})
        assert [r.handle for r in asked] == ["a", "b"] and got.ok and got.server == "redis+cluster://h:1"
        assert {f.message.split(": ", 1)[0] for f in got.findings if f.check == "live-waitaof"} == {"h:1", "h:2"}
        assert got.findings[0].check == "cluster-topology" and got.facts is None

    def test_a_misconfigured_primary_refuses_naming_it(self) -> None:
        got, _ = run_plan(self.plan(SHARDS), {"a": node_report("h:1"), "b": node_report("h:2", config_appendfsync="no")})
        assert [str(f).split(": ", 1)[0] for f in got.refused] == ["h:2"]

    def test_an_unreachable_primary_is_unverifiable_and_the_others_are_still_probed(self) -> None:
        got, asked = run_plan(self.plan(SHARDS), {"a": ConnectionLost("Connection refused"), "b": node_report("h:2")})
        assert [r.handle for r in asked] == ["a", "b"]
        f = [f for f in got.refused if f.check == "reachable"][0]
        assert f.level == "unverifiable"  # says nothing of its durability: exit 2, not a refusal's 1
        assert f.message == "h:1: cannot reach this primary: Connection refused"

    def test_replicas_are_probed_when_the_policy_counts_on_them(self) -> None:
        policy = Durability.replicas_received(1)
        replica = node_report("h:11", role="slave", primary="h:1", config_maxmemory_policy="allkeys-lru",
                              maxmemory_policy="allkeys-lru", live_ran=False)
        primary = node_report("h:1", replicas_online=1, live_replicas=1, live_replicas_asked=1,
                              config_min_replicas_to_write="1")
        got, asked = run_plan(self.plan(SHARDS, policy), {"a": primary, "a1": replica, "b": node_report("h:2")})
        assert [r.handle for r in asked] == ["a", "a1", "b"]
        assert "h:11 (replica of h:1): slave of h:1" in [f.message for f in got.findings if f.check == "replica-role"]
        bad = [f for f in got.refused if f.check == "maxmemory-policy"]
        assert len(bad) == 1 and bad[0].message.startswith("h:11 (replica of h:1): maxmemory-policy is 'allkeys-lru'")
        assert not [f for f in got.findings if f.check == "role" and f.message.startswith("h:11")]  # its own role check is not the primary's

    def test_a_loading_replica_only_warns_and_an_unreachable_one_warns(self) -> None:
        policy = Durability.replicas_received(1)
        primary = node_report("h:1", replicas_online=1, live_replicas=1, live_replicas_asked=1,
                              config_min_replicas_to_write="1")
        loading = node_report("h:11", role="slave", primary="h:1", loading=True, live_ran=False)
        got, _ = run_plan(self.plan(SHARDS, policy), {"a": primary, "a1": loading, "b": node_report("h:2")})
        f = [f for f in got.findings if f.check == "loading" and f.message.startswith("h:11")][0]
        assert f.level == "warn" and got.ok
        got, _ = run_plan(self.plan(SHARDS, policy), {"a": primary, "a1": ConnectionLost("timed out", timed_out=True), "b": node_report("h:2")})
        f = [f for f in got.findings if f.check == "replica"][0]
        assert f.level == "warn" and "cannot reach it: timed out" in f.message and got.ok

    def test_an_online_replica_the_topology_does_not_list_is_a_warning(self) -> None:
        """Redis leaves a replica out of CLUSTER SLOTS until it has synced data (a cluster just
        formed, nothing written yet): the probe checked none of its settings yet said nothing,
        though the policy counts on it. Now a warning names the primary and how many."""
        policy = Durability.replicas_received(1)
        primary = node_report("h:1", replicas_online=1, live_replicas=1, live_replicas_asked=1,
                              config_min_replicas_to_write="1")
        unlisted = Topology([NodeSpec("a", "h:1", "ns:probe:{a}")], cluster_notes(1, 16384, 0))
        got, asked = run_plan(self.plan(unlisted, policy), {"a": primary})
        f = [f for f in got.findings if f.check == "replica"][0]
        assert f.level == "warn" and f.message.startswith("h:1: 1 online replica(s) not listed")
        assert got.ok and [r.handle for r in asked] == ["a"]
        got, _ = run_plan(self.plan(SHARDS, policy), {"a": primary, "a1": node_report("h:11", role="slave",
                          primary="h:1", live_ran=False), "b": node_report("h:2")})
        assert not [f for f in got.findings if f.check == "replica" and "not listed" in f.message]
        got, _ = run_plan(self.plan(unlisted), {"a": primary})  # a local policy counts on no replica
        assert not [f for f in got.findings if f.check == "replica"]

    def test_a_replica_that_says_it_is_a_primary_is_a_warning(self) -> None:
        policy = Durability.replicas_received(1)
        primary = node_report("h:1", replicas_online=1, live_replicas=1, live_replicas_asked=1,
                              config_min_replicas_to_write="1")
        got, _ = run_plan(self.plan(SHARDS, policy), {"a": primary, "a1": node_report("h:11"), "b": node_report("h:2")})
        f = [f for f in got.findings if f.check == "replica-role"][0]
        assert f.level == "warn" and "failover in progress" in f.message

    def test_engines_and_versions_of_every_primary(self) -> None:
        got, _ = run_plan(self.plan(SHARDS), {"a": node_report("h:1", "valkey"), "b": node_report("h:2", "redis")})
        assert got.engine == "mixed(redis,valkey)" and got.version == "8.2.3,9.1.2"

    def test_one_primary_keeps_its_facts(self) -> None:
        report = node_report("h:1")
        got, _ = run_plan(self.plan(Topology([NodeSpec("p", "h:1")], sentinel_notes("svc", "h:1", []))), {"p": report})
        assert got.facts is report.facts and got.findings[0].message == (
            "Sentinel names h:1 the primary of 'svc', with 0 replica(s): -")

    def test_the_slot_map_decides_before_any_node_answers(self) -> None:
        assert cluster_notes(0, 0, 0)[0].level == "refuse"
        uncovered = cluster_notes(2, 10000, 2)[0]
        assert uncovered.level == "refuse" and "10000 of 16384" in uncovered.message
        assert cluster_notes(3, 16384, 3)[0].level == "ok"
        got, asked = run_plan(self.plan(Topology([], cluster_notes(0, 0, 0))), {})
        assert asked == [] and not got.ok and got.engine == "unknown"


def test_facts_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        healthy().role = "slave"  # type: ignore[misc]


PURE = r"""
import importlib, sys, types
from importlib.abc import MetaPathFinder

BLOCKED = ("redis", "tenacity", "asyncio", "socket")

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the probe imported {name}")
        return None

sys.meta_path.insert(0, Block())
pkg = types.ModuleType("redis_ckpt")  # the package's face imports the shells: stand in for it
pkg.__path__ = [PACKAGE]
sys.modules["redis_ckpt"] = pkg
for name in ("facts", "report", "rules", "settings", "flow", "topology"):
    importlib.import_module("redis_ckpt.probe." + name)
assert not [n for n in sys.modules if n.split(".")[0] in BLOCKED]
"""


def test_the_probe_imports_no_io_library() -> None:
    """The probe's facts, rules, flow and plan are sans-IO like the core (the drivers run them)."""
    import subprocess
    import sys
    from pathlib import Path

    import redis_ckpt

    code = f"PACKAGE = {str(Path(redis_ckpt.__file__).parent)!r}\n" + PURE
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_memory_warns_from_80_percent_of_maxmemory():
    (ok,) = by_check(evaluate(healthy(used_memory=50 * 2**20, maxmemory=100 * 2**20), LOCAL), "memory")
    assert ok.level == "ok" and "50.0 MiB of maxmemory 100.0 MiB (50%)" in ok.message
    (full,) = by_check(evaluate(healthy(used_memory=81 * 2**20, maxmemory=100 * 2**20), LOCAL), "memory")
    assert full.level == "warn" and "81%" in full.message and "prune" in full.remedy
    (free,) = by_check(evaluate(healthy(used_memory=2**20, maxmemory=0), LOCAL), "memory")
    assert free.level == "ok" and "no maxmemory" in free.message
    assert not by_check(evaluate(healthy(), LOCAL), "memory")  # INFO did not say
