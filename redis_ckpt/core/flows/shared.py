"""The flows' side of shared chunks (the design is in :mod:`redis_ckpt.core.dedup`): how a
commit stages only what its run does not hold, the loop over the script's NEED_CHUNKS /
NEED_FREE / NEED_SHARED answers, and the read of a generation stored as shared chunks (in
pipelines of READ_BATCH_BYTES)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ...errors import FrameError
from ..config import StoreConfig
from ..dedup import (DEDUP_MIN_BYTES, Held, SharedAssembler, chunk_class, encode_manifest, read_batches, read_manifest,
                     split_parts)
from ..frame import FrameParts
from ..keys import RunKeys
from ..ops import Cmd, Flow, Pipe, ReplyError
from ..replies import hash_of, raise_failures
from .base import REMEMBERED, FlowsBase, not_converged
from .confirm import drift_unread

__all__ = ["SharedFlows", "SharedForm", "shared_addresses"]

#: NEED_CHUNKS / NEED_FREE / NEED_SHARED answers a commit follows at most (each: nothing was written)
SHARED_SENDS = 6


def shared_addresses(k: RunKeys) -> Flow[list[str]]:
    """The addresses of the run's shared chunks (its x:refs fields), sorted: what a script
    under a retention answering NEED_SHARED needs (every chunk gets the run's expiry). A rare
    path (finish, an acquire or commit under a retention of a run holding shared chunks)."""
    replies = yield Pipe([Cmd("HGETALL", k.refs)], route=k.head)
    raise_failures(replies)
    return sorted(hash_of(replies[0]))


class SharedForm:
    """A frame as shared chunks: the manifest (``stored``), and the staging of the chunks the
    run is not known to hold (``staging``, ``moved``: lists changed in place when the script
    asks for more, so that a script built from them later sees the change)."""

    def __init__(self, k: RunKeys, generation: int, parts: FrameParts, cid: str, *, token: int, expected: int,
                 held: Held | None, ttl_ms: int) -> None:
        self.k, self.cid, self.token, self.expected, self.ttl = k, cid, token, expected, ttl_ms
        self.avg = chunk_class(len(parts.payload), held.avg if held else None)
        self.chunks = split_parts(parts, self.avg, held.order if held and held.avg == self.avg else ())
        self.by_address = {a: c for a, c in self.chunks}
        self.distinct = frozenset(self.by_address)
        self.stored = encode_manifest(k.run_id, generation, parts, self.chunks, self.avg)
        self.size = len(parts)
        self.staging: list[Cmd] = []
        self.moved: list[str] = []
        self.staged: list[str] = []
        self.stage(sorted(self.distinct - (held.addresses if held else frozenset())))

    def stage(self, addresses: Iterable[str]) -> None:
        """Stage ``addresses`` too (all staged chunks go again: a rare path, after the script
        found the run holds less than this process thought)."""
        self.staged = sorted(set(self.staged) | {a for a in addresses if a in self.by_address})
        k, n = self.k, len(self.staged)
        sent = sum(len(self.by_address[a]) for a in self.staged)
        self.staging[:] = [] if not n else [
            Cmd("MULTI"), Cmd("HSET", k.staging, self.cid, f"{self.token}:{self.expected}:{n}:{sent}"),
            Cmd("PEXPIRE", k.staging, self.ttl),
            *(Cmd("SET", k.stage(self.cid, i), self.by_address[a], "PX", self.ttl) for i, a in enumerate(self.staged)),
            Cmd("EXEC")]
        self.moved[:] = [*(k.stage(self.cid, i) for i in range(n)), *(k.shared(a) for a in self.staged)]


class SharedFlows(FlowsBase):
    def __init__(self, config: StoreConfig) -> None:
        super().__init__(config)
        #: per run, the addresses of the generation this process last committed or loaded
        self.held: dict[str, Held] = {}
        #: the distinct addresses of shared generations this process wrote or read, by (run, generation)
        self.manifests: dict[tuple[str, int], frozenset[str]] = {}

    def shares(self, frame: Any) -> bool:
        """Whether ``frame`` is stored as shared chunks (a store with ``dedup``, a large frame)."""
        return self.config.dedup and isinstance(frame, FrameParts) and len(frame) > DEDUP_MIN_BYTES

    def shared_form(self, k: RunKeys, generation: int, parts: FrameParts, cid: str, *, token: int,
                    expected: int) -> SharedForm:
        return SharedForm(k, generation, parts, cid, token=token, expected=expected,
                          held=self.held.get(k.run_id), ttl_ms=self.config.stage_ttl_ms)

    def free_guess(self, run_id: str, drop: Iterable[str], form: SharedForm | None) -> list[str]:
        """The addresses whose keys a commit passes after x:refs: those the generations ``drop``
        ("<g>:<c>") free, as far as this process knows, and every one of ``form`` (the script
        checks that those it does not stage still exist: NEED_CHUNKS for a key gone)."""
        out: set[str] = set(form.distinct) if form else set()
        for e in drop:
            out |= self.manifests.get((run_id, int(e.partition(":")[0])), frozenset())
        return sorted(out)

    def remember_shared(self, run_id: str, generation: int, addresses: frozenset[str], avg: int,
                        order: tuple[tuple[str, int], ...] = ()) -> None:
        if len(self.manifests) >= REMEMBERED:
            self.manifests.clear()
            self.held.clear()
        self.manifests[(run_id, generation)] = addresses
        self.manifests.pop((run_id, generation - self.config.keep), None)
        held = self.held.get(run_id)
        if held is None or held.generation <= generation:
            self.held[run_id] = Held(generation, addresses, avg, order)

    def shared_sends(self, k: RunKeys, send: Callable[[], Flow[list[Any]]], form: SharedForm | None,
                     free: list[str]) -> Flow[list[Any]]:
        """``send()`` again while the script answers NEED_CHUNKS (stage them: ``form``),
        NEED_FREE (pass their keys: ``free``, changed in place) or NEED_SHARED (under a
        retention: pass every chunk of the run's x:refs, read here, likewise); then its replies."""
        for _ in range(SHARED_SENDS):
            replies = yield from send()
            reply = replies[0]
            code = reply.code if isinstance(reply, ReplyError) else None
            if code == "NEED_FREE":
                free[:] = sorted(set(free) | set(reply.fields))
            elif code == "NEED_SHARED":
                free[:] = sorted(set(free) | set((yield from shared_addresses(k))))
            elif code == "NEED_CHUNKS" and form is not None:
                form.stage(reply.fields)
            else:
                return replies
            drift_unread(replies, self.config)
        raise not_converged(k.run_id, "commit", SHARED_SENDS)

    def read_shared(self, k: RunKeys, generation: int, blob: bytes) -> Flow[Any]:
        """The frame of a generation stored as shared chunks: its chunks in pipelines of
        READ_BATCH_BYTES (a batch copied into the frame and freed before the next comes),
        each checked against its address (FrameError naming the first bad one)."""
        m = read_manifest(blob, run_id=k.run_id, generation=generation)
        assembler = SharedAssembler(m)
        try:
            for batch in read_batches(m.lengths):  # GETs in pipelines (no MGET: the documented ACL line)
                values = yield Pipe([Cmd("GET", k.shared(m.addresses[i])) for i in batch], route=k.head)
                raise_failures(values)
                for v in values:
                    assembler.add(v)
                del values  # their memory is reused by the next batch's
            frame = assembler.finish()
        except FrameError:
            # the run holds a damaged chunk: the next commit stages every chunk again (the
            # copy it renames into place repairs the damaged one, if the state still lists it)
            self.held.pop(k.run_id, None)
            raise
        self.remember_shared(k.run_id, generation, m.distinct, m.avg, tuple(zip(m.addresses, m.lengths)))
        return frame
