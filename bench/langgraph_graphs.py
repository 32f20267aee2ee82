"""The graphs bench/langgraph_savers.py runs on each saver: a 41-superstep agent (20
agent/tool rounds, then a ``Send`` fan-out to 4 workers) and a graph whose ``DeltaChannel``
holds 13 entries (``get_state`` rebuilds it from the saver's delta history)."""

from __future__ import annotations

import operator
import random
import uuid
from typing import Annotated, Any, TypedDict

from states import _vocabulary, message

ROUNDS_OF_AGENT = 20
FANOUT = 4


class State(TypedDict):
    messages: Annotated[list, operator.add]
    rounds: int
    results: Annotated[list, operator.add]


class Part(TypedDict):
    part: int
    query: str


def build_graph(saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    rng = random.Random(41)
    words = _vocabulary(rng)
    agent_says: list[dict[str, Any]] = []
    tool_says: list[dict[str, Any]] = []
    i = 0
    while len(agent_says) < ROUNDS_OF_AGENT or len(tool_says) < ROUNDS_OF_AGENT:
        m = message(rng, words, i)
        {"assistant": agent_says, "tool": tool_says}.get(m["role"], []).append(m)
        i += 1

    def agent(s: State) -> dict[str, Any]:
        r = s["rounds"]
        return {"messages": [agent_says[r]], "rounds": r + 1}

    def tools(s: State) -> dict[str, Any]:
        return {"messages": [tool_says[s["rounds"] - 1]]}

    def after_tools(s: State) -> Any:
        if s["rounds"] < ROUNDS_OF_AGENT:
            return "agent"
        return [Send("worker", {"part": i, "query": f"part {i} of the report"}) for i in range(FANOUT)]

    def worker(p: Part) -> dict[str, Any]:
        return {"results": [{"part": p["part"], "text": f"{p['query']}: done"}]}

    g = StateGraph(State)
    g.add_node("agent", agent)
    g.add_node("tools", tools)
    g.add_node("worker", worker)
    g.add_edge(START, "agent")
    g.add_edge("agent", "tools")
    g.add_conditional_edges("tools", after_tools, ["agent", "worker"])
    g.add_edge("worker", END)
    return g.compile(checkpointer=saver)


def run_graph(graph: Any, durability: str) -> int:
    """One whole run on a new thread; returns the supersteps that ran nodes (LangGraph numbers
    the input -1 and the step that feeds it to the first node 0)."""
    config = {"configurable": {"thread_id": f"graph-{uuid.uuid4().hex[:12]}"}}
    out = graph.invoke({"messages": [{"role": "user", "content": "Write the report."}], "rounds": 0, "results": []},
                       config, durability=durability)
    assert len(out["messages"]) == 1 + 2 * ROUNDS_OF_AGENT and len(out["results"]) == FANOUT
    return int(graph.get_state(config).metadata["step"])


# -- DeltaChannel: get_state walks the history of the delta channel -------------------------

DELTA_UPDATES = 13  # issue 13: a thread whose DeltaChannel holds 13 log entries


def delta_graph(saver: Any) -> Any:
    from langgraph.channels.delta import DeltaChannel
    from langgraph.graph import END, START, StateGraph

    def extend(state: list, writes: list) -> list:
        return state + [x for w in writes for x in w]

    g = StateGraph(TypedDict("Delta", {"log": Annotated[list, DeltaChannel(extend)], "n": int}))  # type: ignore[operator]
    g.add_node("step", lambda s: {"log": [f"entry {s['n']}"], "n": s["n"] + 1})
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: "step" if s["n"] < DELTA_UPDATES - 1 else END)
    return g.compile(checkpointer=saver)


