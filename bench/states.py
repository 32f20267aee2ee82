"""The states the bench commits: a payload of a given size, and a message-shaped state
built deterministically from a seed, like an agent's history.

A message-shaped state is what an agent framework checkpoints: a list of message dicts
(role, content strings of varied length, uuid-string ids, tool calls with name and args
dicts, timestamps, token counts). Only plain types (str, int, float, bool, None, list,
dict), so msgpack, pickle and orjson can all take the very same object.
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

import msgpack

ROLES = ("user", "assistant", "tool")
TOOLS = ("search", "fetch_page", "run_sql", "read_file", "calculator", "send_email")
MODELS = ("gpt-4o-2024-08-06", "claude-sonnet-4", "llama-3.1-70b")


def payload_state(size: int) -> dict[str, Any]:
    """A checkpoint-like state: a little structure plus an incompressible payload of ``size``."""
    return {"step": 7, "done": ["fetch", "parse", "embed"], "scores": [0.5] * 16, "payload": os.urandom(size)}


def _vocabulary(rng: random.Random, n: int = 600) -> list[str]:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(n)]


def _text(rng: random.Random, words: list[str], mean_chars: int) -> str:
    target = max(4, int(rng.lognormvariate(0, 0.8) * mean_chars))
    out: list[str] = []
    length = 0
    while length < target:
        w = rng.choice(words)
        out.append(w)
        length += len(w) + 1
    text = " ".join(out)
    return text[0].upper() + text[1:] + "."


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def message(rng: random.Random, words: list[str], i: int, t0: float = 1_767_000_000.0) -> dict[str, Any]:
    """The ``i``-th message of a conversation: user, assistant (often with tool calls), tool."""
    role = ROLES[i % 3] if i % 7 else "user"
    created = t0 + i * 1.7 + rng.random()
    msg: dict[str, Any] = {"id": _uuid(rng), "role": role, "created_at": round(created, 6)}
    if role == "user":
        msg["content"] = _text(rng, words, 80)
    elif role == "assistant":
        msg["content"] = _text(rng, words, 170) if rng.random() < 0.6 else ""
        calls = []
        for _ in range(rng.choice((0, 1, 1, 2))):
            name = rng.choice(TOOLS)
            calls.append({"id": f"call_{rng.getrandbits(96):024x}", "type": "function", "name": name,
                          "args": {"query": _text(rng, words, 40), "limit": rng.randint(1, 20),
                                   "filters": {"lang": rng.choice(("en", "de", "fr")),
                                               "after": f"2025-{rng.randint(1, 12):02d}-01"}}})
        msg["tool_calls"] = calls
        msg["response_metadata"] = {"model": rng.choice(MODELS), "finish_reason": "tool_calls" if calls else "stop",
                                    "usage": {"input_tokens": rng.randint(200, 9000),
                                              "output_tokens": rng.randint(5, 700)}}
    else:
        msg["content"] = _text(rng, words, 280)
        msg["tool_call_id"] = f"call_{rng.getrandbits(96):024x}"
        msg["name"] = rng.choice(TOOLS)
        msg["status"] = "success" if rng.random() < 0.95 else "error"
    return msg


def message_state(messages: int = 2000, seed: int = 12) -> dict[str, Any]:
    """An agent thread's state: ``messages`` message dicts plus a little bookkeeping."""
    rng = random.Random(seed)
    words = _vocabulary(rng)
    return {"thread_id": _uuid(rng), "messages": [message(rng, words, i) for i in range(messages)],
            "summary": _text(rng, words, 300), "step": messages, "interrupted": False}


def message_history(target_bytes: int, seed: int = 13) -> list[dict[str, Any]]:
    """A list of messages whose msgpack encoding is about ``target_bytes``."""
    rng = random.Random(seed)
    words = _vocabulary(rng)
    out: list[dict[str, Any]] = []
    size = 0
    while size < target_bytes:
        m = message(rng, words, len(out))
        out.append(m)
        size += len(msgpack.packb(m))
    return out
