"""Where a RedisCkptSaver write's time goes: ``put`` and ``put_writes`` at 1 KiB and 64 KiB
against the floor of the same server (a bare ``HSET`` of the value followed by ``WAITAOF``,
one round trip), with the saver's own parts measured apart:

- client CPU outside the wire (the flow with the server's replies canned: serde, envelope,
  script arguments, retry and confirmation checks);
- ``writes_item`` alone (serde and the checksummed envelope);
- the server's time in ``saver_write.lua`` per call (``INFO commandstats``, EVALSHA usec);
- the time a script spends only taking the value as an argument (a script that returns at
  once), against one taking none.

    python bench/langgraph_writes.py [--n 300]

A diagnosis tool: nothing is judged here (bench/langgraph_savers.py holds the targets).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import timeit
import uuid
from collections.abc import Callable
from typing import Any

import redis
from langgraph_savers import Driver

from redis_ckpt import CheckpointStore
from redis_ckpt.drivers import resp


def p50_us(f: Callable[[], Any], n: int) -> float:
    for _ in range(10):
        f()
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs) * 1e6


def evalsha_us(r: Any, f: Callable[[], Any], n: int) -> float:
    r.config_resetstat()
    for _ in range(n):
        f()
    return float(r.info("commandstats").get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))


def no_wire_us(saver: Any, d: Driver, n: int) -> float:
    """The saver's put_writes with every send answered by the first real reply."""
    real, canned = resp.send_sync, {}

    def fake(client: Any, commands: Any, until: Any = None, name: Any = None) -> Any:
        if len(commands) not in canned:
            canned[len(commands)] = real(client, commands, until, name)
        return canned[len(commands)]

    task = str(uuid.uuid4())
    resp.send_sync = fake
    try:
        return timeit.timeit(lambda: saver.put_writes(d.config, [("messages", d.value)], task_id=task),
                             number=n) / n * 1e6
    finally:
        resp.send_sync = real


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300)
    a = ap.parse_args()
    from redis_ckpt.integrations.langgraph import writes
    from redis_ckpt.langgraph import RedisCkptSaver
    from redis_ckpt.testing import LocalServer

    keys = [f"{{lgw}}:k{i}" for i in range(10)]
    rows = ["| value | put p50 us | put_writes p50 us | floor HSET+WAITAOF p50 us | saver_write.lua us/call "
            "(put_writes) | Lua taking the value as ARGV us | client CPU off the wire us | writes_item us |",
            "|---|---|---|---|---|---|---|---|"]
    with LocalServer("valkey") as server:
        r = redis.Redis.from_url(server.url)
        saver = RedisCkptSaver(CheckpointStore(r, namespace=f"bench-lgw-{uuid.uuid4().hex[:8]}"), owner="bench")
        ret = r.script_load("return 1")
        for label, size in (("1 KiB", 1024), ("64 KiB", 64 * 1024)):
            d = Driver(saver, os.urandom(size))
            for _ in range(3):
                d.put()
                d.put_writes()
            put, pw = p50_us(d.put, a.n), p50_us(d.put_writes, a.n)
            floor = p50_us(lambda v=d.value: resp.send_sync(r, [("HSET", "{lgw}:h", os.urandom(8), v),
                                                                  ("WAITAOF", 1, 0, 0)]), a.n)
            lua = evalsha_us(r, d.put_writes, a.n)
            bare = evalsha_us(r, lambda: r.evalsha(ret, 10, *keys), a.n)
            with_arg = evalsha_us(r, lambda v=d.value: r.evalsha(ret, 10, *keys, v), a.n)
            off_wire = no_wire_us(saver, d, a.n)
            e = saver._engine
            run_id = e.keys(d.thread).run_id
            item = timeit.timeit(lambda: writes.writes_item(e, run_id, d.config, [("messages", d.value)], "t", ""),
                                 number=a.n) / a.n * 1e6
            rows.append(f"| {label} | {put:.0f} | {pw:.0f} | {floor:.0f} | {lua:.1f} | {with_arg - bare:.1f} | "
                        f"{off_wire:.1f} | {item:.1f} |")
        print(f"Valkey {server.version} (appendfsync always)\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
