"""Load against a raw GET of the same bytes, the codec against msgpack (and pickle, orjson),
and the peak memory of a large commit and load (each in its own process).
"""

from __future__ import annotations

import json
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import redis
from _harness import Target, ratio, timed, worst
from states import payload_state

from redis_ckpt import CheckpointStore
from redis_ckpt.core.codec import decode_state, encode_state

LOAD_FLOOR = 0.9      # target 2
ENCODE_FLOOR = 0.8    # target 3
DECODE_FLOOR = 0.9
COMMIT_RSS = 1.25     # target 4
LOAD_RSS = 1.5
REPS = 3


def load_table(url: str, sizes: dict[str, int], rounds: int,
               facts: dict[str, Any] | None = None) -> tuple[list[str], list[Target]]:
    """Per round, raw GETs and loads alternate one by one; the ratio is of per-round p50s.
    ``facts`` gets the server time (INFO commandstats) of a 1 KiB load against its GET."""
    rows = ["| state | raw GET p50 ms | store.load p50 ms | load speed / raw GET speed (rounds' range) | >= 0.9x |",
            "|---|---|---|---|---|"]
    client = redis.Redis.from_url(url)
    store = CheckpointStore(client, namespace="bench-load")
    judged: list[float] = []
    for label, size in sizes.items():
        run = f"load-{size}"
        store.acquire(run, owner="bench", ttl=3600).commit(payload_state(size))
        raw_key = f"raw-load:{{{size}}}"
        client.set(raw_key, store.export_frame(run))  # the same bytes, whole, under one plain key
        per_round = 40 if size <= 1024 * 1024 else 4
        raw_p50, ours_p50 = [], []
        store.load(run)
        for _ in range(rounds):
            raw, ours = [], []
            for _ in range(per_round):
                t = time.perf_counter()
                client.get(raw_key)
                raw.append(time.perf_counter() - t)
                t = time.perf_counter()
                store.load(run)
                ours.append(time.perf_counter() - t)
            raw_p50.append(statistics.median(raw))
            ours_p50.append(statistics.median(ours))
        r = ratio(raw_p50, ours_p50)
        judge = size <= 1024 * 1024
        if judge:
            judged.append(r.median)
        rows.append(f"| {label} | {statistics.median(raw_p50) * 1000:.3f} | {statistics.median(ours_p50) * 1000:.3f} | "
                    f"{r.spread} | {('held' if r.median >= LOAD_FLOOR else 'missed') if judge else '(not a target)'} |")
        if facts is not None and size == min(sizes.values()):
            facts["server_usec"] = _server_usec(client, lambda: store.load(run))  # noqa: B023
            facts["get_usec"] = _server_usec(client, lambda: client.get(raw_key))  # noqa: B023
            facts["client_us"] = {"load": statistics.median(ours_p50) * 1e6, "get": statistics.median(raw_p50) * 1e6}
    store.close()
    return rows, [t for t in [worst("2. load >= 0.9x a raw GET of the same bytes (1 KiB to 1 MiB)",
                                    judged, LOAD_FLOOR)] if t]


def _server_usec(client: redis.Redis, fn: Callable[[], object], n: int = 300) -> float:
    """Server time per call of ``fn`` (INFO commandstats, every command it sent or ran)."""
    client.config_resetstat()
    for _ in range(n):
        fn()
    stats = client.info("commandstats")
    top = {k: v for k, v in stats.items() if k not in ("cmdstat_config|resetstat", "cmdstat_info")}
    sent = {k: v for k, v in top.items() if k.removeprefix("cmdstat_") in ("evalsha", "get", "hmget", "multi", "exec")}
    if "cmdstat_evalsha" in sent:  # the commands a script runs are inside its own time
        sent = {"cmdstat_evalsha": sent["cmdstat_evalsha"]}
    return sum(v["usec"] for v in sent.values()) / n


def _records() -> dict[str, Any]:
    return {"records": [{"id": i, "name": f"item-{i}", "score": i / 7, "tags": ["a", "b"]} for i in range(20000)]}


def codec_table(message_state: dict[str, Any], rounds: int,
                facts: dict[str, Any] | None = None) -> tuple[list[str], list[Target]]:
    """Per round, each codec encodes and decodes each document REPS times (the fastest
    counts), codecs interleaved; speeds are medians over rounds, the ratios to msgpack
    medians of per-round ratios."""
    try:
        import orjson
    except ImportError:
        orjson = None
    contenders: list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]] = [
        ("redis-ckpt codec (exact types)", encode_state, decode_state),
        ("msgpack.packb / unpackb", msgpack.packb, msgpack.unpackb),
        ("pickle (protocol 5)", lambda o: pickle.dumps(o, protocol=5), pickle.loads),
    ]
    if orjson is not None:
        contenders.append(("orjson", orjson.dumps, orjson.loads))
    rows = ["| document | codec | encode MiB/s | decode MiB/s | size MiB | encode vs msgpack | decode vs msgpack |",
            "|---|---|---|---|---|---|---|"]
    targets: list[Target] = []
    for doc_name, doc in (("message-shaped state", message_state), ("20,000 small records", _records())):
        blobs = {name: enc(doc) for name, enc, _ in contenders}
        enc_t: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        dec_t: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        for i in range(-1, rounds):  # round -1 warms up and is not counted
            for name, enc, dec in (contenders if i % 2 == 0 else list(reversed(contenders))):
                if i < 0:
                    dec(enc(doc))
                    continue
                blob = blobs[name]
                enc_t[name].append(min(timed(lambda: enc(doc)) for _ in range(REPS)))
                dec_t[name].append(min(timed(lambda: dec(blob)) for _ in range(REPS)))  # noqa: B023
        mp = "msgpack.packb / unpackb"
        for name, _, _ in contenders:
            mib = len(blobs[name]) / 2**20
            er = ratio(enc_t[mp], enc_t[name])  # speed ratio = their time / ours
            dr = ratio(dec_t[mp], dec_t[name])
            rows.append(f"| {doc_name} | {name} | {mib / statistics.median(enc_t[name]):.0f} | "
                        f"{mib / statistics.median(dec_t[name]):.0f} | {mib:.2f} | {er.spread} | {dr.spread} |")
            if doc_name.startswith("message") and facts is not None:
                facts[name] = statistics.median(enc_t[name]) * 1000  # encode ms
            if doc_name.startswith("message") and name.startswith("redis-ckpt"):
                targets.append(Target("3. message-shaped state: codec encode >= 0.8x msgpack.packb",
                                      er.median, ENCODE_FLOOR, shown=f"{er.median:.2f}x"))
                targets.append(Target("3. message-shaped state: codec decode >= 0.9x msgpack.unpackb",
                                      dr.median, DECODE_FLOOR, shown=f"{dr.median:.2f}x"))
    if orjson is None:
        rows.append("| | orjson | not installed | | | | |")
    return rows, targets


def memory_table(url: str, mib: int) -> tuple[list[str], list[Target]]:
    """Peak RSS of one commit and one load of a ``mib`` MiB state, each in its own process."""
    script = Path(__file__).resolve().parent / "large_state.py"
    out = subprocess.run([sys.executable, str(script), "--mib", str(mib), "--url", url, "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = ["| operation | seconds | peak RSS above baseline, MiB | as multiple of the state | bound | verdict |",
            "|---|---|---|---|---|---|"]
    targets = []
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        bound = COMMIT_RSS if r["mode"] == "commit" else LOAD_RSS
        x = (r["peak"] - r["base"]) / mib
        rows.append(f"| {r['mode']} | {r['seconds']:.2f} | {r['peak'] - r['base']:.0f} | {x:.2f}x | "
                    f"<= {bound}x | {'held' if x <= bound else 'missed'} |")
        targets.append(Target(f"4. {mib} MiB state: peak RSS of a {r['mode']} <= {bound}x the state", x, bound,
                              higher_is_better=False, shown=f"{x:.2f}x"))
    return rows, targets
