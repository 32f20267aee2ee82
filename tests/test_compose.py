"""docker-compose.yml: every server it defines passes the startup probe's rules.

Docker is not needed: the file is parsed (PyYAML) and each server's command-line flags are
fed to :func:`redis_ckpt.probe.rules.evaluate` as a declared config, with the facts the probe
would observe on a healthy server of that image (a primary, WAITAOF present, the live write
confirmed, replicas online where the profile has them).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from redis_ckpt import Durability
from redis_ckpt.probe import CONFIG_KEYS, ServerFacts, evaluate

try:
    import yaml
except ImportError:  # a test dependency (pyyaml): skip locally, fail in CI
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        raise
    pytest.skip("pip install pyyaml to check docker-compose.yml", allow_module_level=True)

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
SERVER_BINARIES = ("redis-server", "valkey-server")
#: what every server must say explicitly (not rely on the image's defaults for)
REQUIRED = {
    "appendonly": "yes",
    "appendfsync": "always",
    "no-appendfsync-on-rewrite": "no",
    "maxmemory-policy": "noeviction",
    "aof-load-truncated": "no",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def flags(command: list[str]) -> dict[str, list[str]]:
    """``[binary, --a, x, --b, y, z]`` -> ``{"a": ["x"], "b": ["y", "z"]}``."""
    out: dict[str, list[str]] = {}
    key = None
    for arg in command[1:]:
        if arg.startswith("--"):
            key = arg[2:]
            assert key not in out, f"flag --{key} given twice"
            out[key] = []
        else:
            assert key is not None, f"argument {arg!r} before any flag"
            out[key].append(arg)
    return out


def servers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items()
            if isinstance(svc.get("command"), list) and svc["command"][0] in SERVER_BINARIES}


def engine_of(svc: dict[str, Any]) -> tuple[str, tuple[int, ...]]:
    image = svc["image"]
    repo, _, tag = image.partition(":")
    engine = "valkey" if repo.endswith("valkey") else "redis"
    return engine, tuple(int(x) for x in tag.split(".") if x.isdigit())


def replicas_of(name: str, port: str, compose: dict[str, Any]) -> int:
    """How many replicas a primary has once its profile is up."""
    svc = compose["services"][name]
    f = flags(svc["command"])
    if f.get("cluster-enabled") == ["yes"]:
        return 1  # --cluster-replicas 1: any node may be a primary with one replica
    return sum(1 for other in servers(compose).values()
               if flags(other["command"]).get("replicaof") == [svc.get("hostname", name), port])


def test_compose_file_parses_and_has_the_three_profiles(compose):
    profiles = {p for svc in compose["services"].values() for p in svc.get("profiles", [])}
    assert profiles == {"single", "sentinel", "cluster"}
    for name, svc in compose["services"].items():
        assert svc.get("profiles"), f"{name} has no profile: it would start with every `docker compose up`"
        cmd = svc.get("command", [])
        assert all(isinstance(a, str) for a in cmd), f"{name}: a non-string command item (YAML yes/no?)"


def test_images_are_recent_enough(compose):
    for name, svc in compose["services"].items():
        engine, version = engine_of(svc)
        assert version >= ((8,) if engine == "valkey" else (7, 4)), f"{name}: {svc['image']} is too old"
    images = {s["image"] for s in compose["services"].values()}
    assert {"redis:7.4", "valkey/valkey:8"} <= images


@pytest.mark.parametrize("name", sorted(servers(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))))
def test_every_server_passes_the_probe_rules(compose, name):
    svc = compose["services"][name]
    f = flags(svc["command"])
    for key, value in REQUIRED.items():
        assert f.get(key) == [value], f"{name}: --{key} {value} is not set explicitly"
    port = f["port"][0]
    assert svc["ports"] == [f"{port}:{port}"], f"{name}: port {port} is not published as itself"
    engine, version = engine_of(svc)
    is_replica = "replicaof" in f
    replicas = 0 if is_replica else replicas_of(name, port, compose)
    cluster = f.get("cluster-enabled") == ["yes"]
    declared = {k: " ".join(v) for k, v in f.items() if k in CONFIG_KEYS}
    if replicas or is_replica or cluster:
        assert int(declared.get("min-replicas-to-write", "0")) >= 1, f"{name}: min-replicas-to-write 0 with replicas"
    policy = Durability.replicas_fsynced(1) if (replicas or cluster) else Durability()
    facts = ServerFacts(
        engine=engine, version=".".join(map(str, version)), role="master", loading=False,
        aof_last_write_status="ok", replicas_online=max(replicas, 1 if cluster else 0),
        cluster_enabled=cluster, cluster_state="ok" if cluster else None,
        cluster_slots_assigned=16384 if cluster else None,
        config=None, config_error="declared in docker-compose.yml", has_waitaof=True,
        live_ran=True, live_local=1, live_replicas=policy.replicas, live_replicas_asked=policy.replicas,
        live_timeout_ms=policy.timeout_ms, live_ms=1.0,
    )
    findings = evaluate(facts, policy, declared)
    refused = [str(x) for x in findings if x.level in ("refuse", "unverifiable")]
    assert not refused, f"{name}: {refused}"
    warnings = [x for x in findings if x.level == "warn"]
    assert [w.check for w in warnings] == ["config"], [str(w) for w in warnings]  # only "it was declared"


def test_the_replica_follows_the_primary_and_announces_itself(compose):
    svc = compose["services"]
    rf = flags(svc["replica"]["command"])
    pf = flags(svc["primary"]["command"])
    assert rf["replicaof"] == ["primary", pf["port"][0]]
    for name, f in (("primary", pf), ("replica", rf)):
        assert f["replica-announce-ip"] == [svc[name]["hostname"]] and f["replica-announce-port"] == f["port"]


def sentinel_conf(svc: dict[str, Any]) -> list[str]:
    script = svc["command"][-1]
    body = re.search(r"<<'EOF'\n(.*?)\nEOF\n", script, re.S)
    assert body, "the sentinel command writes its config with a heredoc"
    assert "exec redis-sentinel /data/sentinel.conf" in script or "exec valkey-sentinel /data/sentinel.conf" in script
    return body.group(1).splitlines()


def test_three_sentinels_watch_the_primary_with_a_majority_quorum(compose):
    svc = compose["services"]
    sentinels = [n for n, s in svc.items() if "sentinel" in s.get("profiles", []) and n.startswith("sentinel")]
    assert len(sentinels) == 3
    primary_port = flags(svc["primary"]["command"])["port"][0]
    host_ports = set()
    for n in sentinels:
        lines = sentinel_conf(svc[n])
        assert "sentinel resolve-hostnames yes" in lines and "sentinel announce-hostnames yes" in lines
        assert lines.index("sentinel resolve-hostnames yes") < next(
            i for i, x in enumerate(lines) if x.startswith("sentinel monitor"))
        monitor = next(x.split() for x in lines if x.startswith("sentinel monitor"))
        assert monitor[3:5] == ["primary", primary_port]
        assert 2 <= int(monitor[5]) <= len(sentinels) // 2 + 1
        assert any(x.startswith(f"sentinel down-after-milliseconds {monitor[2]} ") for x in lines)
        host_ports.add(svc[n]["ports"][0].split(":")[0])
        assert svc[n]["depends_on"]["primary"]["condition"] == "service_healthy"
    assert len(host_ports) == 3


def test_six_cluster_nodes_and_a_one_shot_init(compose):
    svc = compose["services"]
    nodes = [n for n, s in svc.items() if n in servers(compose) and flags(s["command"]).get("cluster-enabled") == ["yes"]]
    assert len(nodes) == 6
    for n in nodes:
        f = flags(svc[n]["command"])
        assert f["cluster-announce-hostname"] == [svc[n]["hostname"]] == [n]
        assert f["cluster-preferred-endpoint-type"] == ["hostname"]
        assert f["cluster-config-file"] == ["nodes.conf"]
        assert any(v.endswith(":/data") for v in svc[n]["volumes"]), f"{n}: nodes.conf and the AOF must persist"
    init = svc["cluster-init"]
    assert init["restart"] == "no" and set(init["depends_on"]) == set(nodes)
    assert all(d["condition"] == "service_healthy" for d in init["depends_on"].values())
    script = init["command"][0]
    assert "--cluster create" in script and "--cluster-replicas 1" in script and "--cluster-yes" in script
    assert "cluster_state:ok" in script
    # $$ is compose's escape for a literal $ (no variable interpolation)
    assert re.search(r"(?<!\$)\$(?!\$)", script) is None, "a single $ would be interpolated by compose"
    ports = sorted(flags(svc[n]["command"])["port"][0] for n in nodes)
    assert ports == [f"700{i}" for i in range(1, 7)]
    shlex.split(script.replace("$$", "$"))  # the shell script is at least well-quoted
