"""The main job: a multi-step pipeline that survives its workers.

``python -m redis_ckpt`` (or ``redis-ckpt demo``) runs a 10-step job on three worker
processes, on a local durable Valkey started for you when no URL is given:

1. worker-1 runs steps, committing after each, and is killed with SIGKILL mid-job;
2. worker-2 waits out the dead worker's lease, takes over with a higher fencing token,
   resumes from the last durable step, and is frozen with SIGSTOP (a GC pause, a partition);
3. worker-3 takes over from the frozen one and runs the job to the end;
4. worker-2 is thawed and tries to commit its stale step: the store rejects it (FencedError).

Every commit returns only after the server's AOF fsync confirmed it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from . import DEFAULT_NAMESPACE, CheckpointError, CheckpointStore, FencedError, LeaseHeldError

STEPS = ["fetch", "clean", "tokenize", "embed", "cluster", "label", "score", "rank", "report", "publish"]
NAMESPACE = DEFAULT_NAMESPACE  # so that `redis-ckpt show demo-job` finds it without --namespace
TTL = 1.5  # seconds: short, so that takeovers happen within the demo


def _say(who: str, text: str) -> None:
    print(f"  [{who:>8}] {text}", flush=True)


def run_step(name: str, index: int, previous: dict[str, Any]) -> dict[str, Any]:
    """Pretend work: each step derives a small result from the ones before it."""
    time.sleep(0.25)
    seed = sum(r["value"] for r in previous.values()) if previous else 1
    return {"value": (seed * 31 + index) % 1000, "finished_at": datetime.now(timezone.utc)}


def worker(url: str, run_id: str, name: str, pause_after: int | None) -> int:
    store = CheckpointStore.from_url(url, namespace=NAMESPACE)
    while True:
        try:
            lease = store.acquire(run_id, owner=name, ttl=TTL)
            break
        except LeaseHeldError as held:
            _say(name, f"lease held by {held.owner} for {held.ms_left} ms more; waiting")
            time.sleep(held.ms_left / 1000 + 0.05)
    ck = lease.load()
    state = ck.state if ck else {"done": [], "results": {}, "started": datetime.now(timezone.utc)}
    how = "took over" if lease.kind == "takeover" else "acquired"
    resumed = f"resuming after step {len(state['done'])} (generation {ck.generation})" if ck else "starting fresh"
    _say(name, f"{how} the run with fencing token {lease.token}; {resumed}")
    for index, step in enumerate(STEPS):
        if step in state["done"]:
            continue
        result = run_step(step, index, state["results"])
        state = {**state, "done": [*state["done"], step], "results": {**state["results"], step: result}}
        try:
            generation = lease.commit(state, metadata={"step": step})
        except FencedError as fenced:
            _say(name, f"commit of step {index + 1} REJECTED: token {fenced.token} < fence {fenced.fence} "
                       "(a newer worker owns the run)")
            return 3
        lease.renew()
        _say(name, f"token {lease.token}: step {index + 1}/{len(STEPS)} {step!r} durable as generation {generation}")
        if pause_after is not None and len(state["done"]) == pause_after:
            os.kill(os.getpid(), signal.SIGSTOP)  # freeze here; the demo kills or thaws us
    lease.release()
    _say(name, "job complete; lease released")
    return 0


def _stopped(proc: subprocess.Popen[bytes]) -> None:
    """Block until the worker froze itself (SIGSTOP) or exited."""
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        raise RuntimeError(f"worker exited early with status {status}")


class RunExists(CheckpointError):
    """The demo's run already holds checkpoints, and --reset was not given."""


def orchestrate(url: str, run_id: str, *, reset: bool = False, label: str | None = None) -> int:
    store = CheckpointStore.from_url(url, namespace=NAMESPACE)
    info = store.info(run_id)
    if info.generation > 0:
        if not reset:
            store.close()
            raise RunExists(
                f"run {run_id!r} in namespace {NAMESPACE!r} on {label or store.server} already holds checkpoints "
                f"(generation {info.generation}, written by {info.head.get('owner', '?')}); pass --reset to "
                "delete it and run the demo again, or --run OTHER-ID", run_id=run_id)
        store.delete(run_id, by="demo --reset")  # the fence survives: tokens keep rising
    workers: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, pause_after: int | None = None) -> subprocess.Popen[bytes]:
        # the URL goes through the environment, not argv: a password in it stays out of `ps`
        args = [sys.executable, "-m", "redis_ckpt.demo", "--worker", name, "--run", run_id]
        if pause_after is not None:
            args += ["--pause-after", str(pause_after)]
        # Ctrl-C goes to the terminal's process group: the workers sit in their own sessions, so
        # only this process sees it and stops them (no worker prints a KeyboardInterrupt); the
        # kernel kills them (even a frozen one) if this process dies without cleaning up
        # SIGINT is blocked while forking: a Ctrl-C then cannot interrupt the child before it left
        # the terminal's process group (it stays blocked in the worker, which never wants it), and
        # it reaches this process only once the worker is on the list it stops
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc = subprocess.Popen(args, env={**os.environ, "REDIS_CKPT_URL": url}, start_new_session=True,
                                    preexec_fn=_die_with_parent())
            workers.append(proc)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return proc

    try:
        return _story(store, run_id, spawn)
    except KeyboardInterrupt:
        for w in workers:
            if w.poll() is None:
                w.kill()  # SIGKILL also ends a worker frozen with SIGSTOP
            w.wait()
        print("\ninterrupted: the workers were stopped", flush=True)
        return 130
    finally:
        store.close()


def _die_with_parent() -> Any:
    """A preexec_fn that has the kernel SIGKILL the child when this process dies (Linux)."""
    from .testing.processes import die_with_parent

    return die_with_parent()


def _story(store: CheckpointStore, run_id: str, spawn: Any) -> int:
    print(f"redis-ckpt demo: run {run_id!r}, {len(STEPS)} steps, lease ttl {TTL}s, "
          f"durability {store.durability.label}", flush=True)
    w1 = spawn("worker-1", pause_after=3)
    _stopped(w1)
    w1.kill()
    w1.wait()
    print("  >> worker-1 killed with SIGKILL after step 3", flush=True)

    w2 = spawn("worker-2", pause_after=6)
    _stopped(w2)
    print("  >> worker-2 frozen after step 6 (a GC pause, a partition): its lease will expire", flush=True)

    w3 = spawn("worker-3")
    deadline = time.monotonic() + 30
    while store.info(run_id).lease_owner != "worker-3" and time.monotonic() < deadline:
        time.sleep(0.05)
    w2.send_signal(signal.SIGCONT)
    print("  >> worker-2 thawed: it still believes it owns the run", flush=True)
    w2_code, w3_code = w2.wait(timeout=60), w3.wait(timeout=60)

    ck = store.load(run_id)
    fenced = [e for e in store.events(run_id, count=200) if e.kind == "fenced"]
    print()
    print(f"final: generation {ck.generation}, steps done {len(ck.state['done'])}/{len(STEPS)}, "
          f"last writer {ck.owner} (token {ck.token})")
    for e in fenced:
        print(f"rejected stale write: owner {e.fields['owner']} token {e.fields['token']} "
              f"against fence {e.fields['fence']}")
    ok = w3_code == 0 and w2_code == 3 and ck.state["done"] == STEPS and bool(fenced)
    print("demo OK: no step lost, the stale worker was fenced off" if ok else "demo FAILED")
    return 0 if ok else 1


def _how_to_reopen(data_dir: Any, port: int, run_id: str) -> None:
    ns = "" if NAMESPACE == "default" else f" -n {NAMESPACE}"
    print(f"\nthe data stays in {data_dir}; to look at it again:\n"
          f"  redis-ckpt server --data-dir {data_dir} --port {port}      # in one terminal (Ctrl-C stops it)\n"
          f"  redis-ckpt -u redis://127.0.0.1:{port}/0{ns} show {run_id}   # in another (also: fence, verify)",
          flush=True)


def reporting(body: Callable[[], int], url: str | None = None) -> int:
    """Run a demo's ``body`` and return its exit code; when the demo cannot run, one
    ``error: ...`` line on stderr instead of a traceback (never a password) and exit 2:

    * ``url`` (when given) is one redis-py cannot use: said as the CLI says it, before ``body`` runs;
    * the server cannot be reached, refuses the credentials, or is refused by the store (not
      durable): the :class:`CheckpointError` the store raised, which names the server redacted
      (exit 1 for :class:`RunExists`, a definite "no");
    * the local server started when no URL is given cannot start.

    ``python -m redis_ckpt`` runs in it, and so do ``examples/*.py``: a demo opens its store
    (which probes the server) before it starts any worker, so that a bad URL stops it here.
    """
    if url:
        from .cli.exits import CliFailure
        from .cli.options import check_url

        try:
            check_url(url)
        except CliFailure as bad:
            print(f"error: {bad.message}", file=sys.stderr)
            return 2
    from .testing import ServerBinaryNotFound, ServerStartError

    try:
        return body()
    except (ServerBinaryNotFound, ServerStartError) as exc:
        detail = exc.hint if isinstance(exc, ServerBinaryNotFound) else exc.summary()
        print(f"error: cannot start the local server: {detail}", file=sys.stderr)
        return 2
    except CheckpointError as exc:  # the run exists: 1; the server is refused or unreachable: 2
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, RunExists) else 2
    except KeyboardInterrupt:  # before the workers started, or in a worker run by hand
        print("\ninterrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m redis_ckpt", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("REDIS_CKPT_URL"),
                   help="server to use (default: $REDIS_CKPT_URL, else a local durable Valkey started for you)")
    p.add_argument("--run", default="demo-job")
    p.add_argument("--data-dir", default=None, help="data dir for the local server (default: a temp dir)")
    p.add_argument("--reset", action="store_true",
                   help="delete the run's existing checkpoints first (without it, an existing run is refused)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--pause-after", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.url and a.data_dir and not a.worker:  # as `redis-ckpt demo` (the URL may come from the environment)
        print("error: --data-dir is for the local server; it cannot be used with --url or $REDIS_CKPT_URL",
              file=sys.stderr)
        return 2
    if a.worker:
        return reporting(lambda: worker(a.url, a.run, a.worker, a.pause_after))
    if a.url:
        return reporting(lambda: orchestrate(a.url, a.run, reset=a.reset), a.url)
    return reporting(lambda: _on_a_local_server(a.run, a.data_dir, a.reset))


def _on_a_local_server(run_id: str, data_dir: str | None, reset: bool) -> int:
    from .testing import LocalServer

    try:
        local = LocalServer("valkey", data_dir=data_dir)  # creates the data directory
    except OSError as exc:
        print(f"error: cannot use the data directory {data_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    with local as server:
        print(f"started a local durable Valkey {server.version} on {server.url} "
              f"(appendonly yes, appendfsync always, data in {server.data_dir})")
        label = f"the local server's data in {server.data_dir}"
        code = orchestrate(server.url, run_id, reset=reset, label=label)
        if data_dir is not None:
            _how_to_reopen(server.data_dir, server.port, run_id)
        return code


if __name__ == "__main__":
    sys.exit(main())
