"""Replies as the flows read them: text, hashes, maps, the replies inside an EXEC."""

from __future__ import annotations

from typing import Any

from .ops import ReplyError

__all__ = ["text", "hash_of", "pairs_of", "exec_replies", "raise_failures"]


def text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def hash_of(reply: Any) -> dict[str, str]:
    """A hash reply (HGETALL, CONFIG GET) as a dict of str."""
    if not reply:
        return {}
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    it = iter(reply)  # flat [k, v, k, v] (RESP2 without callbacks)
    return {text(k): text(v) for k, v in zip(it, it)}


def pairs_of(reply: Any) -> dict[str, Any]:
    """A map reply (XINFO ...) as a dict with str keys; values as they came."""
    if isinstance(reply, dict):
        return {text(k): v for k, v in reply.items()}
    it = iter(reply or [])
    return {text(k): v for k, v in zip(it, it)}


def raise_failures(replies: Any) -> None:
    """Raise the first failure among a Pipe's ``replies`` (errors come back in place)."""
    for r in replies:
        if isinstance(r, Exception):
            raise r


def exec_replies(replies: list[Any], n: int) -> list[Any]:
    """The ``n`` replies inside the EXEC of a ``MULTI ... EXEC`` pipe; an error raised."""
    raise_failures(replies)
    inner = replies[-1]
    if not isinstance(inner, list) or len(inner) != n:
        raise ReplyError(f"EXEC answered {inner!r}, not {n} replies")
    raise_failures(inner)
    return inner
