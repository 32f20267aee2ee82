"""What each durability policy costs a commit, measured side by side in one run.

    python bench/durability_costs.py [--commits 200]

Starts its own servers (a Valkey or Redis primary with one AOF replica, both
`appendfsync always`) and prints a Markdown table: p50/p99 commit latency of a 1 KiB
state per policy, and each as a ratio of the raw floor (SET + WAITAOF 1 0 of the same
bytes on the same server).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from redis_ckpt import CheckpointStore, Durability
from redis_ckpt.testing import LocalServer


def wait_online(primary: LocalServer) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        slave = primary.client().info("replication").get("slave0")
        if isinstance(slave, dict) and slave.get("state") == "online":
            return
        time.sleep(0.05)
    raise RuntimeError("replica did not come online")


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) > 1 else xs[0]


def measure(engine: str, n: int) -> list[tuple[str, str, list[float]]]:
    rows = []
    with LocalServer(engine) as primary, LocalServer(engine, replica_of=(primary.host, primary.port)):
        wait_online(primary)
        c = primary.client()
        blob = os.urandom(1024)

        def floor() -> None:
            p = c.pipeline(transaction=False)
            p.set("floor", blob)
            p.execute_command("WAITAOF", 1, 0, 5000)
            p.execute()

        rows.append((engine, "floor: SET + WAITAOF 1 0", timed(floor, n)))
        policies = [
            ("local fsync (default)", Durability()),
            ("+ 1 replica received (WAIT)", Durability.replicas_received(1)),
            ("+ 1 replica fsynced (WAITAOF)", Durability.replicas_fsynced(1)),
        ]
        for label, policy in policies:
            store = CheckpointStore(primary.client(), namespace=f"bench-{policy.label}", durability=policy)
            lease = store.acquire("run", owner="bench", ttl=600)
            state = {"blob": blob}
            count = n if not policy.replica_fsync else max(5, n // 20)
            rows.append((engine, label, timed(lambda: lease.commit(state), count)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=200)
    a = ap.parse_args()
    print(f"Measured on {os.cpu_count()} cores, {a.commits} commits of a 1 KiB state per row "
          "(replica-fsynced rows: n/20), loopback, appendfsync always.\n")
    print("| server | policy | p50 ms | p99 ms | p50 vs floor |")
    print("|---|---|---|---|---|")
    for engine in ("valkey", "redis"):
        rows = measure(engine, a.commits)
        base = statistics.median(rows[0][2])
        for eng, label, xs in rows:
            p50 = statistics.median(xs)
            print(f"| {eng} | {label} | {p50:.2f} | {pct(xs, 99):.2f} | {p50 / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
