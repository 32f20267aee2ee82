"""What every flow of the saver shares: settings, keys, framing, and how a script is sent
(a read: alone; a write: followed by its confirmations on the same connection) and how its
refusals become errors."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from langgraph.checkpoint.serde.base import SerializerProtocol

from ...core.ops import Cmd, Flow, Pipe, Script
from ...core.replies import raise_failures
from ...errors import ConflictError, FencedError, OutcomeUnknownError
from .backend import Backend
from .invocations import Invocation
from .model import Framer, ThreadKeys, ThreadTTL, thread_run_id

__all__ = ["Engine", "Written", "text"]


def text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


class Written(NamedTuple):
    """What a confirmed ``saver_write`` call reports."""

    token: int  #: the writer's token
    version: int  #: the thread's new version
    new_runs: list[str]  #: LangGraph run ids the thread held no checkpoint of before the call
    resent: bool  #: sent again (a lost reply): an earlier attempt may have landed, then new_runs misses its runs


class Engine:
    """Configuration of one saver and the plumbing its flows share (sans-IO)."""

    def __init__(self, backend: Backend, serde: SerializerProtocol, owner: str, ttl: ThreadTTL) -> None:
        self.backend = backend
        self.serde = serde
        self.owner = owner
        self.ttl = ttl
        self.framer = Framer(owner, backend.max_state_bytes, backend.compression)
        self._keys: dict[str, ThreadKeys] = {}

    def keys(self, thread_id: str) -> ThreadKeys:
        k = self._keys.get(thread_id)
        if k is None:
            if len(self._keys) >= 4096:
                self._keys.clear()
            k = self._keys[thread_id] = ThreadKeys(self.backend.namespace, thread_run_id(thread_id))
        return k

    @property
    def read_ttl(self) -> int:
        """The TTL a read refreshes (0: none)."""
        return self.ttl.ms if self.ttl.refresh_on_read else 0

    # -- sending -------------------------------------------------------------------------

    def read(self, k: ThreadKeys, args: Sequence[Any], what: str) -> Flow[Any]:
        """One ``saver_read`` call (retried on a broken connection: a read)."""

        def body() -> Flow[Any]:
            (reply,) = yield Pipe([Script("saver_read", k.all, args)], route=k.route)
            if isinstance(reply, Exception):
                raise reply
            return reply

        return (yield from self.backend.retrying(body, run_id=k.run_id, what=what, writes=False))

    def confirmed(self, ops: list[Cmd | Script], route: str, run_id: str, what: str) -> Flow[list[Any]]:
        """``ops`` then the confirmations, one round trip; the replies of ``ops``. A refusal
        of an op is raised as is (the retry wrapper turns it into a ServerError)."""

        def body() -> Flow[list[Any]]:
            replies = yield self.backend.confirmed(ops, route)
            mine = replies[:len(ops)]
            raise_failures(mine)
            self.backend.check_confirmed(replies, what=what, run_id=run_id)
            return mine

        return (yield from self.backend.retrying(body, run_id=run_id, what=what, writes=True))

    def admin(self, k: ThreadKeys, args: list[Any], what: str) -> Flow[Any]:
        """One ``saver_admin`` call (``args[0]``: "delete", "prune" or "runs"), confirmed; its reply."""
        script = Script("saver_admin", k.all, [args[0], self.owner, self.backend.events_maxlen, *args[1:]])
        (reply,) = yield from self.confirmed([script], k.route, k.run_id, what)
        return reply

    def write(self, k: ThreadKeys, thread_id: str, inv: Invocation | None, body_args: list[Any],
              what: str, token: int | None = None, *, new_thread: bool = False,
              claim_as: str | None = None) -> Flow[Written]:
        """One ``saver_write`` call, confirmed. ``inv``: the
        invocation it belongs to (its claim is used and recorded); ``token``: a standalone
        call's own token (copy, in several calls), else a standalone call claims;
        ``new_thread``: the claim is refused (CONFLICT, nothing written) unless the thread
        holds nothing (version 0), whoever wrote it last, or its last claim was made under
        ``claim_as`` (an invocation id: a copy resumed) and nobody claimed it since."""
        if inv is not None:
            claim = inv.claim()
        elif new_thread:  # an invocation id of its own: no other claim passes for this one
            claim = (0, claim_as or f"new-{os.urandom(8).hex()}", "0")
        else:
            claim = (token or 0, "", "")
        args = [claim[0], claim[1], claim[2], self.owner, self.ttl.ms, self.backend.events_maxlen, thread_id,
                *body_args]
        attempts = 0

        def body() -> Flow[Written]:
            nonlocal attempts
            attempts += 1
            script = Script("saver_write", k.all, args)
            replies = yield self.backend.confirmed([script], k.route)
            reply = replies[0]
            if isinstance(reply, Exception):
                raise self.refused(reply, k, what, args, resent=attempts > 1, inv=inv)
            self.backend.check_confirmed(replies, what=what, run_id=k.run_id)
            return Written(int(reply[0]), int(reply[1]), [text(r) for r in reply[2]], attempts > 1)

        written = yield from self.backend.retrying(body, run_id=k.run_id, what=what, writes=True)
        if inv is not None and inv.token == 0:
            inv.token = written.token
        return written

    def refused(self, reply: Exception, k: ThreadKeys, what: str, args: list[Any], *, resent: bool,
                inv: Invocation | None) -> Exception:
        """The error for a refused write (THREAD_FENCED, CONFLICT); any other refusal as it came."""
        code, *f = str(reply).split(" ")
        if code not in ("THREAD_FENCED", "CONFLICT"):
            return reply
        run_id, thread = k.run_id, args[6]
        if resent:  # the first attempt may have been applied before the thread moved on
            fenced = code == "THREAD_FENCED"
            token, fence = (int(f[0]), int(f[1])) if fenced else (int(args[0]), 0)
            expected, actual = (0, 0) if fenced else (int(f[0]), int(f[1]))
            return OutcomeUnknownError(run_id, what=what, refused="FENCED" if fenced else code, token=token,
                                       fence=fence, expected=expected, actual=actual)
        err: Exception
        if code == "THREAD_FENCED":
            token, fence, claimed, owner = int(f[0]), int(f[1]), int(f[2]), " ".join(f[3:])
            err = FencedError(run_id, token=token, fence=fence,
                              cause="takeover" if claimed == fence and fence else None,
                              by=owner if claimed == fence else None)
            if fence == 0:
                why = "the thread expired (thread_ttl) while this invocation ran"
            elif claimed == fence:
                why = f"another invocation ({owner!r}, token {fence}) continued thread {thread!r}"
            else:
                why = f"thread {thread!r} was revoked or deleted (fence now {fence})"
            err.args = (f"{what} of LangGraph thread {thread!r} refused: {why}; this invocation's token "
                        f"{token} is no longer the thread's, so none of its writes from now on is stored",)
        else:
            expected, actual = int(f[0]), int(f[1])
            err = ConflictError(run_id, expected=expected, actual=actual)
            err.args = (f"{what} of LangGraph thread {thread!r} refused: the thread changed since this "
                        f"invocation read it (version {expected}, now {actual}): another invocation wrote "
                        "it meanwhile. Nothing was stored; run the graph again to continue from the "
                        "newest state",)
        if inv is not None:
            inv.refused = err
        return err
