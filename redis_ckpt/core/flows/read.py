"""Read flows: load (the newest generation that verifies, migrated), and what inspects the
stored frames as they are: generations, export.

A load reads the head and the generation it names as one snapshot; a generation that fails
verification is skipped loudly (logged at ERROR, written to the run's events) for the next
kept one; a head that moves meanwhile is read again, never taken for corruption.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from ...errors import CheckpointError, CodecUnavailableError, CorruptCheckpointError, FrameDamage, FrameError, HeadMovingError, \
    NotFoundError, SchemaVersionError
from ...models import Checkpoint, GenerationInfo, SkippedGeneration, ms_to_datetime, now_ms
from ..chunks import check_chunk, is_manifest, read_manifest
from ..contract import LOAD_FIELDS, head_of, kept, kept_times, load_script
from ..dedup import is_manifest as is_shared_manifest
from ..frame import FrameAssembler, decode_frame, decode_payload, frame_checksum, read_header
from ..keys import RunKeys
from ..ops import Cmd, Flow, Pipe
from ..replies import exec_replies, hash_of, text
from ..retry import MIN_ATTEMPT_S, ask_deadline
from .base import FlowsBase
from .headless import committed_before, head_missing
from .shared import SharedFlows

__all__ = ["ReadFlows", "LOAD_FIELDS"]

log = logging.getLogger("redis_ckpt")

#: chunks fetched per round trip when loading a chunked generation
READ_BATCH = 4
#: a resent audit event looks for its id among this many of the run's newest events
RECENT_EVENTS = 16
#: frames up to this size are read with the head by load.lua (one reply to parse, less server
#: work than MULTI/HMGET/GET/EXEC); larger ones by MULTI/EXEC (a value through Lua is copied)
LOAD_SCRIPT_BYTES = 16 * 1024


class ReadFlows(SharedFlows, FlowsBase):
    def load_flow(self, run_id: str, *, migrate: bool = True) -> Flow[Checkpoint | None]:
        """The newest generation that verifies; None when the run was never committed.
        ``migrate=False``: the state as stored, whatever its schema (see :meth:`checkpoint`).

        The head and the generation it names are read as one snapshot in one round trip when
        this process knows the head's generation (it committed or loaded the run): by
        load.lua for a small frame, MULTI/EXEC for a large one; otherwise the head is read
        first. A head that moved since (a concurrent commit) is
        read again with its new generation, and a generation rotated away while it was read
        (chunks, older ones) starts the read again: a moving head is never corruption. When it
        still moves at the deadline: :class:`HeadMovingError` (retryable, nothing damaged).
        """
        k = self.keys(run_id)

        def attempt() -> Flow[Checkpoint | None]:
            until = None  # the operation's deadline, asked of the driver when the head moves
            guess = self.last_generation.get(k.run_id)
            reads = 0
            while True:
                reads += 1
                # after a miss the head may move once more before this read: ask for the next
                # generation too (with keep=1 at most one of the two exists: no extra bytes)
                wanted = [guess, guess + 1] if guess and reads > 1 else [guess] if guess else []
                if wanted and self.last_size.get(k.run_id, 0) <= LOAD_SCRIPT_BYTES:
                    (reply,) = yield Pipe([load_script(k, wanted)], route=k.head)
                    if isinstance(reply, Exception):
                        raise reply
                    raw, value = reply[:-1], reply[-1]
                    blobs = [value if value is not None and str(g) == text(raw[0]) else None for g in wanted]
                elif wanted:
                    replies = yield Pipe([Cmd("MULTI"), Cmd("HMGET", k.head, *LOAD_FIELDS),
                                          *(Cmd("GET", k.generation(g)) for g in wanted), Cmd("EXEC")],
                                         route=k.head)
                    raw, *blobs = exec_replies(replies, 1 + len(wanted))
                else:
                    raw, blobs = (yield Cmd("HMGET", k.head, *LOAD_FIELDS)), []
                head = head_of(k.run_id, {f: text(v) for f, v in zip(LOAD_FIELDS, raw) if v is not None})
                if not head:
                    if (yield from committed_before(k)):
                        raise head_missing(k.run_id)
                    return None
                generation = int(head.get("generation") or 0)
                if generation < 1 or generation in wanted:  # a snapshot (or a head naming none)
                    result = yield from self.load_from(k, head, dict(zip(wanted, blobs)), migrate=migrate)
                    if result is not None:
                        self.remember(k.run_id, result.head_generation, size=result.size)
                        return result  # else a generation it read was rotated away meanwhile
                if generation >= 1:
                    guess = generation  # read the head again with the generation it names now
                if reads > 1 and until is None:
                    until = yield from ask_deadline(self.config.retry.deadline_s)
                if reads > 1 and time.monotonic() >= until - MIN_ATTEMPT_S:
                    # no pause between reads: each is one round trip and the next one is what
                    # catches up with the writer (a pause only lets the head move further)
                    raise HeadMovingError(k.run_id, reads=reads, deadline_s=self.config.retry.deadline_s)

        return self.retrying(attempt, run_id=k.run_id, what="load", writes=False)

    def load_from(self, k: RunKeys, head: dict[str, str], prefetched: dict[int, Any], *,
                  migrate: bool = True) -> Flow[Checkpoint | None]:
        """The newest of ``head``'s kept generations that verifies; None when one was rotated
        away while it was read (the caller reads the head again)."""
        head_gen = int(head.get("generation", 0))
        newest = prefetched.get(head_gen)
        if newest is not None and head.get("kept", "").rpartition(",")[2] == str(head_gen) \
                and not is_manifest(newest) and not is_shared_manifest(newest):
            # the common case: the head's generation, read with the head, whole (not chunked)
            try:
                header, payload = self.verify(k, head_gen, newest, head)
                state = decode_payload(header, payload)
                del payload
            except FrameError:
                pass  # the loop below reads it again and says why it is skipped
            else:
                t = head.get("kept_ms", "").rpartition(",")[2]
                return self.checkpoint(k, head_gen, head_gen, header, state, newest,
                                       int(t) if t.isdigit() else header.created_ms, (), migrate=migrate)
        skipped: list[SkippedGeneration] = []
        for g, _chunks in sorted(kept(head), reverse=True):
            try:
                blob = yield from self.read(k, g, prefetched.get(g))
                header, payload = self.verify(k, g, blob, head)
                state = decode_payload(header, payload)
                del payload
            except FrameError as bad:
                if bad.reason is FrameDamage.MISSING:
                    now = hash_of((yield Cmd("HGETALL", k.head)))
                    if now.get("commit_id") != head.get("commit_id"):
                        return None  # rotated away meanwhile: reload from the new head
                skipped.append(SkippedGeneration(g, bad.reason.value, bad.detail))
                continue
            if skipped:
                yield from self.report_fallback(k, g, skipped)
            return self.checkpoint(k, g, head_gen, header, state, blob,  # the server's commit time, else the writer's
                                   kept_times(head).get(g, header.created_ms), tuple(skipped), migrate=migrate)
        raise CorruptCheckpointError(k.run_id, {s.generation: f"{s.reason}: {s.detail}" for s in skipped})

    def checkpoint(self, k: RunKeys, g: int, head_gen: int, header: Any, state: Any, blob: Any, created_ms: int,
                   skipped: tuple[SkippedGeneration, ...], *, migrate: bool = True) -> Checkpoint:
        """The loaded generation ``g``: its state migrated to this store's schema, or
        (``migrate=False``, for an admin's read: the CLI has no application's migrations) as
        stored, ``schema_version`` then the stored one."""
        return Checkpoint(
            run_id=k.run_id, state=self.migrate(k.run_id, state, header.schema_version) if migrate else state,
            generation=g, head_generation=head_gen, token=header.token, owner=header.owner,
            created_at=ms_to_datetime(created_ms),  # type: ignore[arg-type]
            schema_version=self.config.schema_version if migrate else header.schema_version,
            stored_schema_version=header.schema_version,
            metadata=header.metadata, checksum=frame_checksum(blob),  # type: ignore[arg-type]
            size=len(blob), skipped=skipped,  # type: ignore[arg-type]
        )

    def report_fallback(self, k: RunKeys, loaded: int, skipped: list[SkippedGeneration],
                        op: str = "load") -> Flow[None]:
        """Say loudly that ``op`` (load, export, fork) took generation ``loaded`` past newer
        ones that failed verification: an ERROR log and a ``fallback`` audit event. A server
        that refuses the event (full: OOM; a read-only ACL user) still serves the read: the
        refusal is logged, the read stands."""
        summary = ", ".join(f"g{s.generation}: {s.reason}" for s in skipped)
        log.error("run %r: %s used generation %d because newer ones failed verification (%s)",
                  k.run_id, op, loaded, summary)
        try:
            yield from self.audit_once(k, "fallback event", "kind", "fallback", "loaded", loaded, "skipped", summary,
                                       "op", op, "ms", now_ms())
        except CheckpointError as refused:
            log.warning("run %r: the fallback's audit event could not be written: %s", k.run_id, refused)

    def audit_once(self, k: RunKeys, what: str, *fields: Any) -> Flow[None]:
        """Add one event (``fields``, plus a random ``id``) to the run's audit stream, once:
        a resend after a lost reply first looks for that id among the run's newest
        ``RECENT_EVENTS`` events (as delete.lua does) and writes nothing when it is there.
        Retried on its own (a lost connection does not repeat the read that wrote it); a
        refusal or the deadline is a :class:`CheckpointError` (``what`` names the event)."""
        event_id = os.urandom(8).hex()
        sends = [0]

        def body() -> Flow[None]:
            sends[0] += 1
            if sends[0] > 1:
                recent = yield Cmd("XREVRANGE", k.events, "+", "-", "COUNT", RECENT_EVENTS)
                if any(hash_of(f).get("id") == event_id for _, f in recent or ()):
                    return
            yield Cmd("XADD", k.events, "MAXLEN", "~", self.config.events_maxlen, "*", *fields, "id", event_id)

        return self.retrying(body, run_id=k.run_id, what=what, writes=False)

    def read(self, k: RunKeys, generation: int, prefetched: Any = None) -> Flow[bytes]:
        """The whole stored frame of a generation, reassembled from its chunks if it has any.

        ``prefetched`` is the value of g:<n> when it was already read. FrameError (MISSING, or
        the manifest's or a chunk's damage) when the frame cannot be had.
        """
        blob = prefetched if prefetched is not None else (yield Cmd("GET", k.generation(generation)))
        if blob is None:
            raise FrameError(FrameDamage.MISSING, "the key does not exist", run_id=k.run_id, generation=generation)
        if is_shared_manifest(blob):
            return (yield from self.read_shared(k, generation, blob))
        if not is_manifest(blob):
            return blob  # type: ignore[no-any-return]
        m = read_manifest(blob, run_id=k.run_id, generation=generation)
        assembler = FrameAssembler(m.size)  # long bins go straight into the objects the state will hold
        for first in range(0, m.count, READ_BATCH):
            idx = range(first, min(first + READ_BATCH, m.count))
            replies = yield Pipe([Cmd("GET", k.chunk(generation, i)) for i in idx], route=k.head)
            for i, r in zip(idx, replies):
                if isinstance(r, Exception):
                    raise r
                check_chunk(m, i, r)
                assembler.write(r)
        frame = assembler.finish()
        del assembler
        if len(frame) != m.size:
            raise FrameError(FrameDamage.TRUNCATED, f"chunks hold {len(frame)} bytes, the manifest says {m.size}",
                             run_id=k.run_id, generation=generation)
        return frame

    def verify(self, k: RunKeys, generation: int, frame: bytes, head: Mapping[str, str]) -> tuple[Any, Any]:
        """(header, payload) of a verified generation, else FrameError."""
        header, payload = decode_frame(frame, run_id=k.run_id, generation=generation,
                                       max_payload_bytes=self.config.max_state_bytes)
        if generation == int(head.get("generation", 0)) and head.get("checksum") not in (None, frame_checksum(frame)):
            raise FrameError(FrameDamage.HEAD_MISMATCH,
                             "checksum differs from the one the head recorded at commit",
                             run_id=k.run_id, generation=generation)
        return header, payload

    def migrate(self, run_id: str, state: Any, stored: int) -> Any:
        """``state`` of schema ``stored`` through the registered migrations to this store's."""
        current = self.config.schema_version
        if stored == current:
            return state
        if stored > current:
            raise SchemaVersionError(
                f"run {run_id!r} was written with schema {stored}, newer than this code's "
                f"{current}: upgrade the code before loading it",
                run_id=run_id, found=stored, supported=current,
            )
        for v in range(stored, current):
            fn = self.migrations.get(v)
            if fn is None:
                raise SchemaVersionError(
                    f"run {run_id!r} has schema {stored}; this code is at {current} "
                    f"but no migration from {v} to {v + 1} is registered",
                    run_id=run_id, found=stored, supported=current,
                )
            state = fn(state)
        return state

    def generations_flow(self, run_id: str) -> Flow[list[GenerationInfo]]:
        """Every kept generation, newest first, each verified (frame and checksum), no migration."""
        k = self.keys(run_id)

        def body() -> Flow[list[GenerationInfo]]:
            head = head_of(k.run_id, hash_of((yield Cmd("HGETALL", k.head))))
            if not head and (yield from committed_before(k, scan=False)):  # never "no generations"
                raise head_missing(k.run_id)
            times = kept_times(head)  # the server's commit times (the frame's own is the writer's clock)
            out: list[GenerationInfo] = []
            for g, _chunks in sorted(kept(head), reverse=True):
                blob = b""
                try:
                    blob = yield from self.read(k, g)
                    self.verify(k, g, blob, head)
                    h = read_header(blob, run_id=k.run_id, generation=g)  # type: ignore[arg-type]
                except FrameError as bad:
                    out.append(GenerationInfo(g, len(blob or b""), False, bad.reason.value, bad.detail))
                    continue
                except CodecUnavailableError as missing:
                    out.append(GenerationInfo(g, len(blob or b""), False, "codec-unavailable", str(missing)))
                    continue
                out.append(GenerationInfo(
                    g, len(blob), True, token=h.token, owner=h.owner,  # type: ignore[arg-type]
                    created_at=ms_to_datetime(times.get(g, h.created_ms)), schema_version=h.schema_version,
                    checksum=frame_checksum(blob), compression=h.compression,  # type: ignore[arg-type]
                    metadata=h.metadata,
                ))
            return out

        return self.retrying(body, run_id=k.run_id, what="generations", writes=False)

    def export_flow(self, run_id: str, generation: int | None = None, *, op: str = "export") -> Flow[bytes]:
        """The stored frame of ``generation`` (default: the newest that verifies, past newer
        damaged ones loudly, as a load: see :meth:`report_fallback`), verified. ``op``: what
        the frame is for (export, fork), as the fallback names it."""
        k = self.keys(run_id)

        def body() -> Flow[bytes]:
            head = head_of(k.run_id, hash_of((yield Cmd("HGETALL", k.head))))
            gens = sorted((g for g, _ in kept(head)), reverse=True)
            if not head:
                if (yield from committed_before(k)):  # lost, not empty: as a load says it
                    raise head_missing(k.run_id)
                raise NotFoundError(f"run {k.run_id!r} has no committed generation", run_id=k.run_id)
            if generation is not None and generation not in gens:
                raise NotFoundError(f"run {k.run_id!r} does not keep generation {generation} "
                                    f"(kept: {', '.join(map(str, gens))})", run_id=k.run_id)
            skipped: list[SkippedGeneration] = []
            for g in gens if generation is None else [generation]:
                try:
                    frame = yield from self.read(k, g)
                    self.verify(k, g, frame, head)
                except FrameError as bad:
                    if generation is not None:
                        raise
                    skipped.append(SkippedGeneration(g, bad.reason.value, bad.detail))
                    continue
                if skipped:
                    yield from self.report_fallback(k, g, skipped, op)
                return bytes(frame)  # a frame read in pieces (FrameAssembler) is joined again
            raise CorruptCheckpointError(k.run_id, {s.generation: f"{s.reason}: {s.detail}" for s in skipped})

        return self.retrying(body, run_id=k.run_id, what="export", writes=False)

