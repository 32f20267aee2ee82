"""Runs whose head is missing: was the run ever committed (then it is damage: the head was
deleted by hand, or lost in a partial restore), and which of its generations' keys are left.
Read by load, generations, export (and fork), delete and prune.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import CorruptCheckpointError
from ..keys import RunKeys, glob_escape
from ..ops import Cmd, Flow, Pipe
from ..replies import hash_of, pairs_of, raise_failures, text

__all__ = ["COMMIT_KINDS", "committed_before", "generation_keys", "lost_entries", "head_missing"]

#: audit events read per round trip when the head is missing (is the run deleted, or lost?)
EVENTS_PAGE = 200
#: kinds of audit event that mean "a generation was written" (``*_unknown``, a resend that
#: cannot tell whether its first attempt applied, proves nothing: the search goes on)
COMMIT_KINDS = frozenset({"commit", "commit_retry", "import", "import_retry"})
#: keys a SCAN call looks at when the head is missing and the audit stream cannot tell
SCAN_COUNT = 1000
#: a lost chunk key past this index is left alone (its generation's entry would name every index below it)
MAX_LOST_CHUNKS = 1 << 16


def committed_before(k: RunKeys, *, scan: bool = True) -> Flow[bool]:
    """Whether the run has (or had, and lost) generations although its head is missing:
    True is corruption, False "never committed" (or deleted with ``delete``). ``scan=False``:
    where the audit stream cannot tell, answer False rather than SCAN (for the commands that
    visit every run: a pruned run's tombstone has no stream).

    * no fence: every commit needs a token the fence handed out, an import raises it and
      ``delete`` keeps it (a tombstone), so the run was never committed. A fence with an
      expiry: the run is under a retention, and its head is gone because it expired (the
      server removes a run's keys one by one: the generations may still be there). (A restore that
      brings back generations without their fence is not detected: it is unsafe anyway,
      tokens would be handed out again.)
    * the audit stream, newest first: a ``delete`` before any commit means deleted; a
      commit or import means committed. A stream holding the run's whole history (nothing
      trimmed, its oldest event the run's first fence: token 1) without a commit means
      never committed. All this in one round trip for a run just acquired.
    * otherwise (a trimmed or deleted stream: hundreds of idle acquire/release events
      since the last commit) the keys answer, whatever the stream holds: a SCAN of the
      node owning the run's slot for the run's own ``g:*`` keys, the pattern escaped.
      It walks that node's keyspace, on this rare path only.
    """
    fence, info, page, fence_ttl = yield Pipe([
        Cmd("EXISTS", k.fence), Cmd("XINFO", "STREAM", k.events),
        Cmd("XREVRANGE", k.events, "+", "-", "COUNT", EVENTS_PAGE), Cmd("PTTL", k.fence)], route=k.head)
    raise_failures((fence, page, fence_ttl))
    if not int(fence) or int(fence_ttl) > 0:
        return False  # never committed; or under a retention, expired (its keys go one by one)
    info = {} if isinstance(info, Exception) else pairs_of(info)  # no stream: "no such key"
    length, added = info.get("length"), info.get("entries-added")
    seen, oldest = 0, None
    while page:
        for entry_id, fields in page:
            f = hash_of(fields)
            kind = f.get("kind", "")
            if kind == "delete":
                return False
            if kind in COMMIT_KINDS:
                return True
            seen, oldest = seen + 1, f
        if len(page) < EVENTS_PAGE:
            break
        page = yield Cmd("XREVRANGE", k.events, f"({text(entry_id)}", "-", "COUNT", EVENTS_PAGE)
    whole = isinstance(length, int) and length == added == seen
    if (whole and oldest is not None and _first_fence(oldest)) or not scan:
        return False
    return bool((yield from generation_keys(k, first=True)))


def generation_keys(k: RunKeys, *, first: bool = False) -> Flow[list[str]]:
    """The run's ``g:*`` keys (generations and their chunks) found by a SCAN of the node owning
    its slot, the pattern escaped; ``first``: stop at the first batch that finds any. It walks
    that node's keyspace: only for a run whose head is missing."""
    pattern = glob_escape(k.base) + ":g:*"
    cursor: Any = 0
    out: list[str] = []
    while True:
        replies = yield Pipe([Cmd("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)], route=k.head)
        raise_failures(replies)
        cursor, found = replies[0]
        out += (text(key) for key in found)
        if (first and out) or int(cursor) == 0:
            return out


def lost_entries(k: RunKeys) -> Flow[list[str]]:
    """The "<g>:<chunks>" entries of the generations a run holds without a head naming them
    (``g:<g>`` and chunk keys ``g:<g>:c:<i>``, as found by :func:`generation_keys`)."""
    chunks: dict[int, int] = {}
    prefix = k.base + ":g:"
    for key in (yield from generation_keys(k)):
        g, _, rest = key[len(prefix):].partition(":")
        i = rest[2:] if rest.startswith("c:") else ""
        if g.isdigit() and (not rest or (i.isdigit() and int(i) < MAX_LOST_CHUNKS)):
            chunks[int(g)] = max(chunks.get(int(g), 0), int(i) + 1 if i else 0)
    return [f"{g}:{c}" for g, c in sorted(chunks.items())]


def head_missing(run_id: str) -> CorruptCheckpointError:
    """The error for a run whose head is gone while its generations are there."""
    return CorruptCheckpointError(
        run_id, {}, message=f"run {run_id!r} has committed generations but its head is missing (deleted by "
                            "hand, or a partial restore); restore the head or import an exported frame")


def _first_fence(event: Mapping[str, str]) -> bool:
    """Whether an audit event is the first fence increment of a run (its first acquire,
    revoke or delete): nothing can have been written before it."""
    kind = event.get("kind")
    return (kind == "acquire" and event.get("token") == "1") or \
        (kind in ("revoke", "delete") and event.get("fence") == "1")
