"""Lifecycle flows: load any kept generation, fork a run from one.

A load of one named generation never falls back: the generation asked for verifies (and is
migrated like any load) or the caller gets the reason. A fork reads a verified generation of
one run and writes it, as the first generation of another run, with the import machinery:
a read on the source's slot, a write on the target's, no command touches both (Cluster).
"""

from __future__ import annotations

import logging

from ...errors import CheckpointError, ConflictError, CorruptCheckpointError, FrameDamage, FrameError, \
    NotFoundError
from ...models import Checkpoint, RunUsage, now_ms
from ..config import MAX_INT, check_int
from ..contract import drop_keys, entry, head_of, kept, kept_times, stage_keys, staged, stored_int
from ..frame import decode_frame, decode_payload, encode_frame, frame_checksum
from ..keys import RunKeys, validate_owner
from ..ops import Cmd, Flow, Pipe
from ..replies import exec_replies, hash_of, raise_failures, text
from .admin import AdminFlows
from .headless import committed_before
from .read import LOAD_FIELDS, ReadFlows

__all__ = ["LifecycleFlows", "FORKED_FROM", "not_kept"]

log = logging.getLogger("redis_ckpt")

#: the metadata key a fork's first generation names its source under
FORKED_FROM = "forked_from"
#: reads of a named generation when rotation keeps removing it under the reader
GENERATION_READS = 3
#: MEMORY USAGE commands per round trip when a run's bytes are counted
USAGE_BATCH = 100


def not_kept(run_id: str, generation: int, kept_now: list[int]) -> NotFoundError:
    """The NotFoundError for a generation the run does not keep, naming the kept ones."""
    if not kept_now:
        return NotFoundError(f"run {run_id!r} has no committed generation (never committed, deleted or "
                             f"expired); generation {generation} cannot be loaded", run_id=run_id)
    listed = ", ".join(map(str, sorted(kept_now, reverse=True)))
    return NotFoundError(f"run {run_id!r} does not keep generation {generation} (kept: {listed})", run_id=run_id)


def fork_target_exists(run_id: str, generation: int, source: str) -> ConflictError:
    err = ConflictError(run_id, expected=0, actual=generation)
    err.args = (f"cannot fork {source!r} into run {run_id!r}: it already has a head at generation "
                f"{generation} (fork starts a new run; delete it first, or pick another id)",)
    return err


class LifecycleFlows(ReadFlows, AdminFlows):
    def load_flow(self, run_id: str, generation: int | None = None, *,
                  migrate: bool = True) -> Flow[Checkpoint | None]:
        """The newest generation that verifies (None: never committed); with ``generation``,
        that kept generation (see :meth:`load_generation_flow`). ``migrate=False``: the state
        as stored, no migration run (an admin's read, whatever the application's schema)."""
        if generation is None:
            return super().load_flow(run_id, migrate=migrate)
        return self.load_generation_flow(run_id, generation, migrate=migrate)

    def load_generation_flow(self, run_id: str, generation: int, *, migrate: bool = True) -> Flow[Checkpoint]:
        """Kept generation ``generation`` of the run, verified and migrated like a load.

        No fallback: a generation that fails verification is a :class:`FrameError` with its
        reason; one the run does not keep is a :class:`NotFoundError` naming the kept ones
        (a run with no head that lost its generations is corruption, as for a load). The head
        and the generation are read as one snapshot; a generation rotated away while its
        chunks are read is read again, and is not kept any more.
        """
        k = self.keys(run_id)
        check_int("generation", generation, 1, MAX_INT, run_id=k.run_id)

        def body() -> Flow[Checkpoint]:
            for _ in range(GENERATION_READS):
                replies = yield Pipe([Cmd("MULTI"), Cmd("HMGET", k.head, *LOAD_FIELDS),
                                      Cmd("GET", k.generation(generation)), Cmd("EXEC")], route=k.head)
                raw, blob = exec_replies(replies, 2)
                head = head_of(k.run_id, {f: text(v) for f, v in zip(LOAD_FIELDS, raw) if v is not None})
                if not head and (yield from committed_before(k)):
                    raise CorruptCheckpointError(
                        k.run_id, {}, message=f"run {k.run_id!r} has committed generations but its head is "
                                              "missing (deleted by hand, or a partial restore)")
                gens = [g for g, _ in kept(head)]
                if generation not in gens:
                    raise not_kept(k.run_id, generation, gens)
                try:
                    if blob is None:  # the snapshot saw no such key
                        raise FrameError(FrameDamage.MISSING, "the key does not exist", run_id=k.run_id,
                                         generation=generation)
                    frame = yield from self.read(k, generation, blob)
                except FrameError as bad:
                    if bad.reason is FrameDamage.MISSING and (yield from self.moved(k, head)):
                        continue  # rotated away meanwhile: the head says what is kept now
                    raise
                header, payload = self.verify(k, generation, frame, head)
                state = decode_payload(header, payload)
                del payload
                return self.checkpoint(k, generation, int(head.get("generation", 0)), header, state, frame,
                                       kept_times(head).get(generation, header.created_ms), (), migrate=migrate)
            raise FrameError(FrameDamage.MISSING, f"rotated away at each of {GENERATION_READS} reads",
                             run_id=k.run_id, generation=generation)

        return self.retrying(body, run_id=k.run_id, what="load", writes=False)

    def stored_frame_flow(self, run_id: str, generation: int) -> Flow[bytes]:
        """The bytes stored for kept generation ``generation``, its chunks reassembled, NOT
        verified (for inspecting a damaged one). :class:`NotFoundError` when not kept;
        :class:`FrameError` when they cannot be had (missing, a damaged manifest or chunk)."""
        k = self.keys(run_id)
        check_int("generation", generation, 1, MAX_INT, run_id=k.run_id)

        def body() -> Flow[bytes]:
            gens = [g for g, _ in kept(head_of(k.run_id, {"kept": text((yield Cmd("HGET", k.head, "kept")) or b"")}))]
            if generation not in gens:
                raise not_kept(k.run_id, generation, gens)
            return (yield from self.read(k, generation))

        return self.retrying(body, run_id=k.run_id, what="read", writes=False)

    def moved(self, k: RunKeys, head: dict[str, str]) -> Flow[bool]:
        """Whether the run's head changed since ``head`` was read (a commit, a delete)."""
        now = yield Cmd("HGET", k.head, "commit_id")
        return (text(now) if now is not None else None) != head.get("commit_id")

    def fork_flow(self, run_id: str, new_run_id: str, *, generation: int | None = None,
                  by: str) -> Flow[int]:
        """Start ``new_run_id`` from a kept generation of ``run_id`` (default: the newest that
        verifies); returns the new run's generation (1).

        The source generation is verified and decoded (a state load could not read is never
        copied), then written as generation 1 of the new run by the import machinery
        (commit.lua in import mode: refused, nothing written, when the new run has a head;
        its fence rises past every token it ever handed out). Its metadata is the source's
        plus ``forked_from`` = {run, generation, checksum}; the stored schema version is the
        source's, so loading either runs the same migrations. Audit: the new run records the
        import (``by``), the source a ``forked`` event naming the new run.
        """
        src, dst = self.keys(run_id), self.keys(new_run_id)
        by = validate_owner(by)
        if generation is not None:
            check_int("generation", generation, 1, MAX_INT, run_id=src.run_id)
        c = self.config

        def taken() -> Flow[int]:
            return stored_int(dst.run_id, "head's 'generation'", (yield Cmd("HGET", dst.head, "generation")) or 0)

        def fork() -> Flow[int]:
            head = yield from self.retrying(taken, run_id=dst.run_id, what="fork", writes=False)
            if head:  # checked first so that a large source is not read for nothing
                raise fork_target_exists(dst.run_id, head, src.run_id)
            frame = yield from self.export_flow(src.run_id, generation, op="fork")
            header, payload = decode_frame(frame, run_id=src.run_id, max_payload_bytes=c.max_state_bytes)
            meta = {**header.metadata, FORKED_FROM: {"run": src.run_id, "generation": header.generation,
                                                     "checksum": frame_checksum(frame)}}
            del frame
            try:
                copy = encode_frame(payload, run_id=dst.run_id, generation=1, token=0, owner=by,
                                    created_ms=now_ms(), schema_version=header.schema_version, metadata=meta,
                                    codec=header.codec, compression=c.compression)
            except CheckpointError as exc:
                exc.run_id = dst.run_id
                raise
            del payload
            try:
                made = yield from self.import_flow(copy, by)
            except ConflictError as conflict:
                raise fork_target_exists(dst.run_id, conflict.actual, src.run_id) from None
            yield from self.note_fork(src, dst, header.generation, by)
            return made

        return fork()

    def note_fork(self, src: RunKeys, dst: RunKeys, generation: int, by: str) -> Flow[None]:
        """The source run's audit event of a fork (after the fork applied: a failure here is
        logged, the fork stands)."""
        try:
            yield from self.audit_once(src, "fork event", "kind", "forked", "to", dst.run_id,
                                       "generation", generation, "by", by, "ms", now_ms())
        except CheckpointError as exc:
            log.warning("run %r was forked into %r but its audit event could not be written: %s",
                        src.run_id, dst.run_id, exc)

    def usage_flow(self, run_id: str) -> Flow[RunUsage]:
        """The run's bytes on the server (``MEMORY USAGE ... SAMPLES 0`` of each of its keys),
        by kind; a key that does not exist counts 0. A server that denies MEMORY USAGE (ACL)
        or lacks it: :class:`ServerError`."""
        k = self.keys(run_id)

        def body() -> Flow[RunUsage]:
            replies = yield Pipe([Cmd("HGETALL", k.head), Cmd("HGETALL", k.staging), Cmd("HGETALL", k.refs)],
                                 route=k.head)
            raise_failures(replies)
            head, registry, refs = (hash_of(r) for r in replies)
            head = head_of(k.run_id, head)
            shared = [k.refs, *map(k.shared, refs)] if refs else []  # dedup=True: its chunks
            groups = {
                "control": [k.fence, k.lease, k.head], "events": [k.events],
                "staging": [k.staging, *stage_keys(k, staged(registry))],
                "generations": [*drop_keys(k, [entry(g, c) for g, c in kept(head)]), *shared],
            }
            names = [key for keys in groups.values() for key in keys]
            sizes: list[int] = []
            for first in range(0, len(names), USAGE_BATCH):
                batch = names[first:first + USAGE_BATCH]
                replies = yield Pipe([Cmd("MEMORY", "USAGE", key, "SAMPLES", "0") for key in batch], route=k.head)
                raise_failures(replies)
                sizes += [int(r or 0) for r in replies]
            by_kind, at = {}, 0
            for kind, keys in groups.items():
                by_kind[kind] = sum(sizes[at:at + len(keys)])
                at += len(keys)
            return RunUsage(run_id=k.run_id, keys=sum(1 for n in sizes if n), **by_kind)

        return self.retrying(body, run_id=k.run_id, what="usage", writes=False)
