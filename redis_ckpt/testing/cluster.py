"""A Redis Cluster on loopback: 3 primaries + 3 replicas of :class:`LocalServer`, built with
CLUSTER MEET / ADDSLOTSRANGE / REPLICATE (``cluster-node-timeout 1000``, ``appendonly yes`` /
``appendfsync always``)."""

from __future__ import annotations

from typing import Any

from redis.cluster import RedisCluster

from .factory import ServerSet
from .processes import HOST
from .server import LocalServer
from .wait import wait_for

__all__ = ["LocalCluster", "NODE_TIMEOUT_MS", "RANGES"]

NODE_TIMEOUT_MS = 1000
RANGES = [(0, 5460), (5461, 10922), (10923, 16383)]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class LocalCluster(ServerSet):
    """3 primaries + 3 replicas (``make``: see :class:`ServerSet`)."""

    def build(self) -> None:
        for _ in range(6):
            self.servers.append(self.make(
                self.engine, cluster_enabled="yes", cluster_node_timeout=NODE_TIMEOUT_MS,
                cluster_config_file="nodes.conf", appendonly="yes", appendfsync="always"))
        first = self.servers[0].client()
        for s in self.servers[1:]:
            first.execute_command("CLUSTER MEET", HOST, s.port)
        for s, (a, b) in zip(self.servers[:3], RANGES):
            s.client().execute_command("CLUSTER ADDSLOTSRANGE", a, b)
        # every node knows every other by its real ID (a node still in handshake shows a
        # temporary one, and CLUSTER REPLICATE of an ID it does not know yet fails)
        ids = {self.node_id(s) for s in self.servers}
        wait_for(lambda: all({_text(n["node_id"]) for n in s.client().cluster("nodes").values()} == ids
                             for s in self.servers), "every node to meet")
        for replica, primary in zip(self.servers[3:], self.servers[:3]):
            replica.client().execute_command("CLUSTER REPLICATE", self.node_id(primary))
        self.wait_healthy()

    @staticmethod
    def node_id(server: LocalServer) -> str:
        return _text(server.client().execute_command("CLUSTER MYID"))

    def by_port(self, port: int) -> LocalServer:
        return next(s for s in self.servers if s.port == int(port))

    def url(self, n: int = 2) -> str:
        """``redis+cluster://`` with the first ``n`` nodes as seeds."""
        return "redis+cluster://" + ",".join(f"{HOST}:{s.port}" for s in self.servers[:n])

    def client(self) -> RedisCluster:
        live = next(s for s in self.servers if s.running)
        return RedisCluster(host=HOST, port=live.port, decode_responses=False)

    def owner(self, slot: int) -> LocalServer:
        """The primary serving ``slot`` according to the nodes themselves (CLUSTER SHARDS-free)."""
        for s in self.servers:
            if not s.running:
                continue
            for entry in s.client().execute_command("CLUSTER SLOTS"):
                lo, hi, primary = entry[0], entry[1], entry[2]
                if lo <= slot <= hi:
                    return self.by_port(primary[1])
        raise AssertionError(f"no node serves slot {slot}")

    def replica_of(self, primary: LocalServer) -> LocalServer:
        for s in self.servers:
            if s.running and s is not primary:
                info = s.client().info("replication")
                if info.get("role") == "slave" and int(info.get("master_port", -1)) == primary.port:
                    return s
        raise AssertionError(f"{primary.port} has no replica")

    def primaries(self) -> list[LocalServer]:
        """The primaries serving slots, as the first live node sees it."""
        live = next(s for s in self.servers if s.running)
        ports = {entry[2][1] for entry in live.client().execute_command("CLUSTER SLOTS")}
        return [self.by_port(p) for p in sorted(ports)]

    def healthy(self) -> bool:
        for s in self.servers:
            c = s.client()
            if _text(c.cluster("info").get("cluster_state")) != "ok":
                return False
            if any("fail" in _text(n.get("flags", "")) for n in c.cluster("nodes").values()):
                return False
            info = c.info("replication")
            if info["role"] == "master":
                online = [v for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()
                          and isinstance(v, dict) and v.get("state") == "online"]
                if not online:
                    return False
            elif info.get("master_link_status") != "up" or int(c.info("persistence").get("loading", 1)):
                return False
        return True

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_for(self.healthy, "cluster_state:ok everywhere, every primary with an online replica", timeout=timeout)
