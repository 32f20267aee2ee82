"""Issue 16, target 2 through the LangGraph saver: a ``RedisCkptSaver.put`` of a message history
that grows by one message a step (about 500 KiB), against a put of a 1 KiB state, side by side
(rounds interleaved, the ratio the median of the rounds' ratios). Run by bench/incremental.py.

The saver stores a changed channel whole (as every LangGraph saver does), encoded by
LangGraph's own serializer: the row also prints what that serializer alone spends on the
history, the part of the put no store can skip while the channel value is one object.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from states import _vocabulary, message, message_history

from redis_ckpt import CheckpointStore

__all__ = ["saver_history_row"]

HISTORY_BYTES = 500 * 1024
PER_ROUND = 20


class SaverThread:
    """One thread of a RedisCkptSaver: each step puts a checkpoint whose ``messages`` channel changed."""

    def __init__(self, saver: Any, thread: str, value_of: Callable[[int], Any]) -> None:
        self.saver, self.value_of = saver, value_of
        self.config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        self.version: Any = None
        self.n = 0
        saver.delete_thread(thread)

    def step(self) -> float:
        from langgraph.checkpoint.base import empty_checkpoint

        self.n += 1
        value = self.value_of(self.n)
        self.version = self.saver.get_next_version(self.version, None)
        cp = empty_checkpoint()
        cp["channel_values"] = {"messages": value}
        cp["channel_versions"] = {"messages": self.version}
        metadata = {"source": "loop", "step": self.n, "parents": {}}
        t = time.perf_counter()
        self.config = self.saver.put(self.config, cp, metadata, {"messages": self.version})
        return time.perf_counter() - t


def saver_history_row(url: str, n_rounds: int, rounds: Callable[..., tuple[float, float, float]],
                      verdict: Callable[[float, float, bool], str]) -> str:
    """The table row of target 2 through the saver (measured on the server at ``url``)."""
    from redis_ckpt.langgraph import RedisCkptSaver

    store = CheckpointStore.from_url(url, namespace="bench-inc-lg")
    saver = RedisCkptSaver(store, owner="bench")
    history = message_history(HISTORY_BYTES)
    rng, words = random.Random(9), _vocabulary(random.Random(9))

    def grown(_: int) -> list[dict[str, Any]]:
        history.append(message(rng, words, len(history)))
        return list(history)  # a new list each step, as LangGraph's add_messages makes one

    big = SaverThread(saver, "history", grown)
    small = SaverThread(saver, "small", lambda n: f"{n:06d}" + "s" * 1018)
    big_t, small_t, r = rounds(lambda: [big.step() for _ in range(PER_ROUND)],
                               lambda: [small.step() for _ in range(PER_ROUND)], n_rounds)
    serializer_s = min(_timed(lambda: saver.serde.dumps_typed(history)) for _ in range(5))
    saver.delete_thread("history")
    saver.delete_thread("small")
    store.close()
    return (f"| 2. RedisCkptSaver put of a growing {HISTORY_BYTES // 1024} KiB history vs a put of a 1 KiB state "
            f"| {r:.2f}x ({big_t * 1e3:.2f} ms vs {small_t * 1e3:.2f} ms; LangGraph's serializer alone spends "
            f"{serializer_s * 1e3:.2f} ms on the history) | <= 1.5x | {verdict(r, 1.5, False)} |")


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
