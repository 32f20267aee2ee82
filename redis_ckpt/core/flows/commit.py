"""Commit flows: a commit (and an import, which runs the same script) from the state to its
confirmed generation.

A commit is one round trip on the hot path: the frame is built here, travels inline (up to
``INLINE_BYTES``) or staged (whole, or as chunks) in the same pipe as ``commit.lua`` and the
confirmations. The script answers what it needs to apply (NEED_KEYS, NEED_STAGE,
STAGE_MISSING: nothing written but the staging) and the flow sends again; a definite refusal
(FENCED, CONFLICT) means not written, and a resend that cannot tell is OUTCOME_UNKNOWN.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import (
    CheckpointError,
    CodecUnavailableError,
    ConflictError,
    FencedError,
    FrameDamage,
    FrameError,
    InvalidOptionError,
    StateError,
    UnsupportedTypeError,
)
from ...models import Event, now_ms
from ..chunks import encode_manifest, split
from ..codec import CODEC_MSGPACK, MAX_DEPTH, encode_state_buffer
from ..config import MAX_INT, check_int
from ..contract import CommitFields, commit_generation, commit_script, damaged_refusal, entry, head_of, kept, refusal
from ..frame import FrameParts, decode_frame, decode_payload, encode_frame_parts, frame_checksum
from ..replies import hash_of
from ..keys import RunKeys, validate_owner
from ..ops import Cmd, Flow, ReplyError, Script
from .base import FlowsBase, not_converged, out_of_range, outcome_unknown
from .confirm import check_confirmed, confirmed, drift_unread
from .shared import SharedFlows

__all__ = ["CommitFlows", "INLINE_BYTES", "explain_fenced", "fence_cause"]

_COMMIT_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
#: frames up to this size go to the commit script as an argument; larger ones are staged. A
#: script argument costs the server a copy into Lua and out (~0.4 ms per MiB); staging costs
#: three more commands and replies and a RENAME. Measured side by side (server and client CPU,
#: Valkey 9.1.2): inline is cheaper up to 256 KiB, staging from about 1 MiB.
INLINE_BYTES = 128 * 1024
#: a script that keeps answering NEED_KEYS / NEED_STAGE / STAGE_MISSING is sent this often at most
MAX_SENDS = 8
#: NEED_STAGE answers after which a script is sent not strict (it leaves what it was not given)
STRICT_SENDS = 3
#: how many of a run's newest audit events a rejected commit reads to say what fenced it off
FENCE_EVENTS = 256
_BUMPS = {"acquire": "takeover", "takeover": "takeover", "reacquire": "takeover",
          "revoke": "revoke", "delete": "delete", "import": "import"}

#: a script for the generations it may touch ("<g>:<chunks>"), the dead staged commits whose
#: keys it gets ("<cid>:<count>") and whether it is strict about the others
Build = Callable[[list[str], list[str], bool], Script]


class CommitFlows(SharedFlows, FlowsBase):
    def encode(self, run_id: str, state: Any, *, generation: int, token: int, owner: str,
               metadata: Mapping[Any, Any] | None, plain: bool = False) -> bytes | FrameParts:
        """The framed generation for ``state``; raises StateError subclasses, writes nothing.

        A state over max_state_bytes is refused as soon as that is known (see encode_state);
        so is metadata over it (it is in every generation's header, decoded by every load).
        A frame that will be chunked, or shared (unless ``plain``), stays in its parts (the
        payload is never copied).
        """
        c = self.config
        try:
            if metadata is not None and not isinstance(metadata, Mapping):
                raise UnsupportedTypeError(
                    f"metadata must be a dict (or another Mapping), not {type(metadata).__name__}",
                    path="metadata", type_name=type(metadata).__name__,
                )
            payload = encode_state_buffer(state, limit=c.max_state_bytes)
            frame = encode_frame_parts(
                payload, run_id=run_id, generation=generation, token=token, owner=owner,
                created_ms=now_ms(), schema_version=c.schema_version,
                metadata=dict(metadata or {}), codec=CODEC_MSGPACK, compression=c.compression,
                metadata_limit=c.max_state_bytes,
            )
            return frame if len(frame) > c.chunk_bytes or (not plain and self.shares(frame)) else bytes(frame)
        except (StateError, CodecUnavailableError) as exc:
            exc.run_id = run_id
            raise

    def commit_flow(self, run_id: str, state: Any, *, token: int, expected_generation: int,
                    owner: str, metadata: Mapping[Any, Any] | None = None,
                    commit_id: str | None = None, retention_ms: int | None = None) -> Flow[int]:
        """Commit ``state`` as generation ``expected_generation + 1``; the generation once
        confirmed. A :class:`FencedError` says who raised the fence (see :func:`explain_fenced`).
        ``retention_ms``: this run's retention from now on (None: the store's; neither: the
        run's own, if it has one)."""
        k = self.keys(run_id)
        retention = self.config.retention_ms if retention_ms is None else retention_ms
        if retention is not None:
            check_int("retention (ms)", retention, 1, MAX_INT, run_id=k.run_id)
        owner = validate_owner(owner)
        check_int("token", token, 1, MAX_INT, run_id=k.run_id)
        check_int("expected_generation", expected_generation, 0, MAX_INT - 1, run_id=k.run_id)
        if commit_id is not None and not (isinstance(commit_id, str) and _COMMIT_ID.fullmatch(commit_id)):
            raise InvalidOptionError("commit_id must be 1-128 characters of A-Z a-z 0-9 _ . -", argument="commit_id")
        c = self.config
        new = expected_generation + 1
        # under a retention the script refuses shared chunks (RETAINED): plain at once
        plain = bool(retention) or k.run_id in self.retained
        frame = self.encode(k.run_id, state, generation=new, token=token, owner=owner, metadata=metadata,
                            plain=plain)
        cid = commit_id or os.urandom(16).hex()  # a uuid4's 32 hex digits, without the UUID object
        form = self.shared_form(k, new, frame, cid, token=token, expected=expected_generation) \
            if not plain and self.shares(frame) else None
        stored, chunks, staging, moved = (form.stored, 0, form.staging, form.moved) if form else \
            self.stored_form(k, new, frame, cid, token=token, expected=expected_generation)
        checksum, size = frame_checksum(frame), len(frame)
        parts = frame if form else None  # shared chunks are views of it: kept for a RETAINED answer
        del frame  # the stored form (or its chunks, zero-copy views) is all that is kept
        # a guess at what rotation drops (the script asks for more when it is wrong)
        old = new - c.keep
        drop = [entry(old, self.chunks_of.get((k.run_id, old), 0))] if old >= 1 else []
        free = self.free_guess(k.run_id, drop, form)  # shared chunks rotation frees (likewise)
        if retention or k.run_id in self.retained:  # every kept generation's keys get the new expiry
            drop = [entry(g, self.chunks_of.get((k.run_id, g), 0)) for g in range(max(1, old), new)]
        passed = [drop]  # the entries of the last script sent
        sent = [0]  # attempts that went out: from the second on, a resend of this commit id
        # Staged bytes per run stay bounded: every commit that applies removes the staging of
        # commits that can no longer apply, and all other staging once it passes
        # max_state_bytes; so at any time a run holds its in-flight commits' data plus at most
        # max_state_bytes left over, and nothing older than stage_ttl_ms.

        def build(drop: list[str], dead: list[str], strict: bool) -> Script:
            passed[0] = drop
            fields = CommitFields(
                mode="dedup" if form else "commit", token=token, expected=expected_generation, commit_id=cid,
                checksum=checksum,
                schema_version=c.schema_version, codec=CODEC_MSGPACK, owner=owner, keep=c.keep,
                maxlen=c.events_maxlen, generation=new, size=size, chunks=chunks, by="",
                staged=len(moved) // 2, resend=int(sent[0] > 1), drops=len(drop),
                stage_limit=c.max_state_bytes, strict=int(strict), retention=retention or 0,
                margin=c.fence_margin_ms)
            return commit_script(k, fields, stored, moved, drop, dead, free)

        def body() -> Flow[int]:
            nonlocal form, stored, chunks, staging, moved
            sent[0] += 1
            replies = yield from self.shared_sends(
                k, lambda: self.with_keys(build, drop, route=k.head, before=staging, run_id=k.run_id,
                                          what="commit", resend=sent[0] > 1),
                form, free)
            reply = replies[0]
            if isinstance(reply, ReplyError) and reply.code == "RETAINED" and form is not None:
                # the run is under a retention (its head says so): shared chunks would expire
                # with the generation that staged them; this commit goes as a plain one, and
                # so do the run's next ones from this process
                drift_unread(replies, self.config)
                self.retained.add(k.run_id)
                form = None
                whole = parts if len(parts) > c.chunk_bytes else bytes(parts)
                stored, chunks, staging, moved = self.stored_form(k, new, whole, cid, token=token,
                                                                  expected=expected_generation)
                replies = yield from self.shared_sends(
                    k, lambda: self.with_keys(build, drop, route=k.head, before=staging, run_id=k.run_id,
                                          what="commit", resend=sent[0] > 1),
                    None, free)
                reply = replies[0]
            if not isinstance(reply, ReplyError):
                generation = commit_generation(reply)
                self.remember(k.run_id, generation, chunks, size)
                if form:
                    self.remember_shared(k.run_id, generation, form.distinct, form.avg,
                                         tuple((a, len(c)) for a, c in form.chunks))
                asked = passed[0] if passed[0] is not drop and not retention else ()
                if any(int(e.partition(":")[0]) > old for e in asked):  # the kept ones: the run's own retention
                    self.retained.add(k.run_id)
                check_confirmed(replies, self.config, what="commit", run_id=k.run_id, generation=generation)
                return generation
            drift_unread(replies, self.config)
            if reply.code in ("FENCED", "FENCE_BEHIND"):
                r = refusal(reply)
                raise FencedError(k.run_id, token=int(r["token"]), fence=int(r["fence"]),
                                  cause="fence_behind" if reply.code == "FENCE_BEHIND" else None)
            raise self.refused(k.run_id, reply, "commit")

        return explain_fenced(self, k.run_id, self.retrying(body, run_id=k.run_id, what="commit", writes=True))

    def import_flow(self, frame: bytes, by: str) -> Flow[int]:
        """Restore an exported frame under its own run and generation; the fence only rises.

        The frame's checksum is its commit id: a resend of an import that applied (or the same
        frame imported again while its generation is kept) returns that generation. The frame
        is verified and its payload decoded first - decompression bounded by max_state_bytes
        and MAX_ZSTD_RATIO, nesting by the codec's MAX_DEPTH - so a frame that load could not
        read is refused (FrameError) before anything is written.
        """
        c = self.config
        h, payload = decode_frame(frame, max_payload_bytes=c.max_state_bytes)
        decode_payload(h, payload, max_depth=MAX_DEPTH)
        del payload
        k = self.keys(h.run_id)
        by, _ = validate_owner(by), validate_owner(h.owner)  # both travel newline-joined to the script
        if h.generation < 1:
            raise FrameError(FrameDamage.BAD_HEADER, "generation < 1", run_id=h.run_id, generation=h.generation)
        check_int("generation", h.generation, 1, MAX_INT, run_id=k.run_id)
        check_int("token", h.token, 0, MAX_INT - 1, run_id=k.run_id)  # the fence becomes token + 1 at most
        checksum, size = frame_checksum(frame), len(frame)
        cid = f"import-{checksum}"
        stored, chunks, staging, moved = self.stored_form(k, h.generation, frame, cid, token=h.token,
                                                          expected=h.generation - 1)
        sent = [0]

        def build(drop: list[str], dead: list[str], strict: bool) -> Script:
            fields = CommitFields(
                mode="import", token=h.token, expected=0, commit_id=cid, checksum=checksum,
                schema_version=h.schema_version, codec=h.codec, owner=h.owner, keep=c.keep,
                maxlen=c.events_maxlen, generation=h.generation, size=size, chunks=chunks, by=by,
                staged=len(moved) // 2, resend=int(sent[0] > 1), drops=len(drop),
                stage_limit=c.max_state_bytes, strict=int(strict), retention=c.retention_ms or 0,
                margin=c.fence_margin_ms)
            return commit_script(k, fields, stored, moved, drop, dead, free)

        free: list[str] = []

        def body() -> Flow[int]:
            sent[0] += 1
            head = head_of(k.run_id, hash_of((yield Cmd("HGETALL", k.head))))
            entries = [entry(g, n) for g, n in kept(head)]
            drop = entries if c.retention_ms or head.get("retention_ms") else entries[: max(0, len(entries) + 1 - c.keep)]
            replies = yield from self.shared_sends(
                k, lambda: self.with_keys(build, drop, route=k.head, before=staging, run_id=k.run_id,
                                          what="import", resend=sent[0] > 1),
                None, free)
            if isinstance(replies[0], ReplyError):
                drift_unread(replies, self.config)
                raise self.refused(k.run_id, replies[0], "import")
            generation = commit_generation(replies[0])
            check_confirmed(replies, self.config, what="import", run_id=k.run_id, generation=generation)
            return generation

        return self.retrying(body, run_id=k.run_id, what="import", writes=True)

    @staticmethod
    def refused(run_id: str, reply: ReplyError, what: str) -> Exception:
        """The error for commit.lua's refusal (FENCED aside, which the commit explains)."""
        if reply.code == "CONFLICT":
            r = refusal(reply)
            return ConflictError(run_id, expected=int(r["expected"]), actual=int(r["actual"]))
        if reply.code == "OUTCOME_UNKNOWN":
            return outcome_unknown(run_id, refusal(reply), what)
        if reply.code == "OUT_OF_RANGE":
            return out_of_range(run_id, refusal(reply), what)
        if reply.code == "DAMAGED":
            return damaged_refusal(run_id, refusal(reply))
        return reply

    def with_keys(self, build: Build, entries: list[str], route: str, before: Sequence[Cmd] = (), *,
                  run_id: str, what: str, resend: bool = False) -> Flow[list[Any]]:
        """Send ``before`` then ``build(entries, dead, strict)`` and the confirmations on one connection.

        ``entries`` name the generations ("<g>:<chunks>") whose keys the script is given,
        ``dead`` the dead staged commits ("<cid>:<count>") whose staged keys it removes. When it
        answers NEED_KEYS (it would touch generations whose keys were not passed) or NEED_STAGE
        (dead staged commits whose keys were not passed), they are added and the script is
        sent again: nothing but the staging was written before that answer, and the staged keys
        stay in place for the resend; STAGE_MISSING stages them again. After three NEED_STAGE
        answers the script is sent not ``strict``: it applies and leaves what it was not given
        (to the next commit, or the staged keys' TTL), so a stream of dying stagers cannot
        starve a commit. ``resend``: an earlier attempt went out (its outcome unknown), so its
        staging may be in place: the script goes first alone, the staging again only on
        STAGE_MISSING. Returns the replies from the script's on.
        """
        send: Sequence[Cmd] = () if resend else before
        dead: list[str] = []
        need_stage = 0
        for _ in range(MAX_SENDS):
            script = build(entries, dead, need_stage < STRICT_SENDS)
            replies = yield confirmed([*send, script] if send else [script], self.config, route=route)
            if send:
                staged, replies = replies[: len(send)], replies[len(send):]
                for r in staged:  # an EXEC's reply is the list of its commands' replies
                    for one in r if isinstance(r, list) else [r]:
                        if isinstance(one, Exception):
                            raise one
            reply = replies[0]
            code = reply.code if isinstance(reply, ReplyError) else None
            if code in ("NEED_KEYS", "NEED_STAGE", "STAGE_MISSING"):
                drift_unread(replies, self.config)  # sent again: the check goes along again
            if code == "NEED_KEYS":
                entries = sorted(set(entries) | set(reply.fields))
                send = ()
            elif code == "NEED_STAGE":
                dead = sorted(set(dead) | set(reply.fields))
                need_stage += 1
                send = ()
            elif code == "STAGE_MISSING":
                send = before
            else:
                return replies
        raise not_converged(run_id, what, MAX_SENDS, outcome_unknown=resend)

    def stored_form(self, k: RunKeys, generation: int, frame: bytes, cid: str, *, token: int,
                    expected: int) -> tuple[Any, int, list[Cmd], list[str]]:
        """How a frame travels: (ARGV value for g:<n>, chunk count, staging commands, KEYS of
        the staged keys followed by the keys they become).

        Up to INLINE_BYTES the frame goes to the script as an argument; up to chunk_bytes it is
        staged whole with a plain SET and renamed into g:<n> (an argument of a script costs the
        server ~0.4 ms per MiB, a SET a fraction of that); beyond, it is staged as chunks and
        g:<n> gets the manifest. Staging first records the commit in the run's staging hash
        (so that the next commit or acquire can find and remove it if this writer dies before
        its script runs); every staged key and the hash expire after ``stage_ttl_ms``.
        """
        c = self.config
        if len(frame) <= min(INLINE_BYTES, c.chunk_bytes):
            return frame, 0, [], []
        ttl = c.stage_ttl_ms
        if len(frame) <= c.chunk_bytes:
            stage = k.stage(cid, 0)
            return b"", 0, [*_register(k, cid, token, expected, 1, len(frame), ttl),
                            Cmd("SET", stage, frame, "PX", ttl)], [stage, k.generation(generation)]
        parts = split(frame, c.chunk_bytes)
        # one MULTI/EXEC: the server applies (and, under appendfsync always, fsyncs) the chunks
        # in one go instead of once per chunk as each arrives
        staging = [Cmd("MULTI"), *_register(k, cid, token, expected, len(parts), len(frame), ttl),
                   *(Cmd("SET", k.stage(cid, i), part, "PX", ttl) for i, part in enumerate(parts)),
                   Cmd("EXEC")]
        keys = [*(k.stage(cid, i) for i in range(len(parts))), *(k.chunk(generation, i) for i in range(len(parts)))]
        return encode_manifest(k.run_id, generation, parts), len(parts), staging, keys


def _register(k: RunKeys, cid: str, token: int, expected: int, count: int, size: int, ttl: int) -> list[Cmd]:
    """The staging hash's record of a staged commit (see contract.staged)."""
    return [Cmd("HSET", k.staging, cid, f"{token}:{expected}:{count}:{size}"), Cmd("PEXPIRE", k.staging, ttl)]


def fence_cause(events: Sequence[Event], fence: int) -> tuple[str, str | None] | None:
    """(cause, by) of the event that raised the run's fence to ``fence``, newest first; None
    when the events no longer tell."""
    for e in reversed(events):
        cause = _BUMPS.get(e.kind)
        if cause is None:
            continue
        value = e.fields.get("token" if cause == "takeover" else "fence")
        if value == str(fence):
            return cause, e.fields.get("owner" if cause == "takeover" else "by")
    return None


def explain_fenced(core: Any, run_id: str, flow: Flow[int]) -> Flow[int]:
    """``flow``; when it ends in :class:`FencedError`, one extra read of the run's audit events
    (``core.events_flow``) says who raised the fence (an admin's revoke, a delete, a newer worker)."""
    try:
        return (yield from flow)
    except FencedError as fenced:
        if fenced.cause is not None:  # fence_behind: no event raised the fence past this token
            raise
        try:
            found = fence_cause((yield from core.events_flow(run_id, count=FENCE_EVENTS)), fenced.fence)
        except CheckpointError:
            found = None  # the rejection stands; only its explanation is missing
        if found is not None:
            fenced.explain(*found)
        raise fenced
