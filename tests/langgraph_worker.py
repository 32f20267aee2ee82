"""A LangGraph worker process for tests/test_langgraph_workers.py: its own store and saver,
graph invocations on request.

    python tests/langgraph_worker.py URL NAMESPACE NAME

Reads one JSON command per line on stdin, answers with JSON lines on stdout:

* ``{"op": "invoke", "tag": str, "thread": str, "input": dict | null, "resume": any,
  "durability": "sync" | "async" | "exit", "gate": str | null, "fail": bool, "ask": bool}``
  runs one invocation in a thread of its own: ``{"tag", "event": "node", "name"}`` as each
  node starts, then ``{"tag", "event": "done", "log", "interrupted", "elapsed"}`` or
  ``{"tag", "event": "error", "type", "message", "elapsed"}``. ``gate``: node ``work`` waits
  until that gate opens; ``fail``: ``work`` raises; ``ask``: node ``ask`` interrupts.
* ``{"op": "open", "gate": str}`` opens a gate. ``{"op": "quit"}`` ends the process.

The graph: START -> plan -> work -> ask -> publish -> END; every node appends
``[node, worker name]`` to ``log``.
"""

from __future__ import annotations

import json
import operator
import sys
import threading
import time
from collections import defaultdict
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from redis_ckpt import CheckpointStore
from redis_ckpt.langgraph import RedisCkptSaver

NAME = sys.argv[3] if len(sys.argv) > 3 else "?"
_out = threading.Lock()
_gates: defaultdict[str, threading.Event] = defaultdict(threading.Event)


def say(**msg: Any) -> None:
    with _out:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()


class State(TypedDict):
    log: Annotated[list, operator.add]


def node(name: str) -> Any:
    def run(state: State, config: RunnableConfig) -> dict[str, Any]:
        conf = config["configurable"]
        say(tag=conf["tag"], event="node", name=name)
        entry = name
        if name == "work":
            if conf.get("gate"):
                _gates[conf["gate"]].wait(120)
            if conf.get("fail"):
                raise RuntimeError("work failed")
        if name == "ask" and conf.get("ask"):
            entry = f"ask:{interrupt('approve?')}"
        return {"log": [[entry, NAME]]}

    return run


def build(saver: RedisCkptSaver) -> Any:
    g = StateGraph(State)
    names = ["plan", "work", "ask", "publish"]
    for n in names:
        g.add_node(n, node(n))
    g.add_edge(START, names[0])
    for a, b in zip(names, names[1:]):
        g.add_edge(a, b)
    g.add_edge(names[-1], END)
    return g.compile(checkpointer=saver)


def invoke(graph: Any, cmd: dict[str, Any]) -> None:
    tag = cmd["tag"]
    conf = {"thread_id": cmd["thread"], "tag": tag, "gate": cmd.get("gate"), "fail": cmd.get("fail", False),
            "ask": cmd.get("ask", False)}
    arg = Command(resume=cmd["resume"]) if "resume" in cmd else cmd.get("input")
    started = time.monotonic()
    try:
        out = graph.invoke(arg, {"configurable": conf}, durability=cmd.get("durability", "sync"))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        say(tag=tag, event="error", type=type(exc).__name__, message=str(exc), elapsed=time.monotonic() - started)
    else:
        say(tag=tag, event="done", log=out.get("log"), interrupted="__interrupt__" in out,
            elapsed=time.monotonic() - started)


def main() -> None:
    store = CheckpointStore.from_url(sys.argv[1], namespace=sys.argv[2])
    graph = build(RedisCkptSaver(store, owner=f"worker-{NAME}"))
    say(event="ready")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "invoke":
            threading.Thread(target=invoke, args=(graph, cmd), daemon=True).start()
        elif cmd["op"] == "open":
            _gates[cmd["gate"]].set()
        elif cmd["op"] == "quit":
            break
    store.close()


if __name__ == "__main__":
    main()
