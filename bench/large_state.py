"""Commit and load of one large state: time and peak memory, each in its own process.

    python bench/large_state.py [--mib 256] [--url URL] [--json]

Starts a local durable Valkey unless --url is given. Prints a Markdown table: for commit
and for load, the seconds taken and the process's peak RSS above its baseline, as MiB and
as a multiple of the state size. (The state is one bytes value, so its own size is exact.)
With --json, one JSON line per operation instead (what bench/compare.py reads).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(mode: str, url: str, mib: int) -> None:
    from redis_ckpt import CheckpointStore

    store = CheckpointStore.from_url(url, namespace="bench-large", keep=1)
    if mode == "commit":
        state = {"blob": os.urandom(mib * 1024 * 1024), "note": "large"}
        base = rss_peak_mib()
        lease = store.acquire("large", owner="bench", ttl=600)
        t = time.perf_counter()
        lease.commit(state)
    else:
        base = rss_peak_mib()
        t = time.perf_counter()
        ck = store.load("large")
        assert len(ck.state["blob"]) == mib * 1024 * 1024
    took = time.perf_counter() - t
    print(json.dumps({"mode": mode, "seconds": took, "base": base, "peak": rss_peak_mib()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--url")
    ap.add_argument("--json", action="store_true", help="one JSON line per operation")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.url, a.mib)
        return 0

    def run(url: str) -> list[dict]:
        out = []
        for mode in ("commit", "load"):
            p = subprocess.run([sys.executable, __file__, "--child", mode, "--url", url, "--mib", str(a.mib)],
                               capture_output=True, text=True, check=True)
            out.append(json.loads(p.stdout.strip().splitlines()[-1]))
        return out

    if a.url:
        rows = run(a.url)
    else:
        from redis_ckpt.testing import LocalServer

        with LocalServer("valkey") as server:
            rows = run(server.url)
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{a.mib} MiB state (one bytes value), chunked into 4 MiB pieces, appendfsync always, "
          f"{os.cpu_count()} cores\n")
    print("| operation | seconds | peak RSS above baseline, MiB | as multiple of the state |")
    print("|---|---|---|---|")
    for r in rows:
        extra = r["peak"] - r["base"]
        print(f"| {r['mode']} | {r['seconds']:.2f} | {extra:.0f} | {extra / a.mib:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
