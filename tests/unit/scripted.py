"""A scripted server for the core's flows: no socket, no clock to wait on.

``Scripted(*answers).run(flow)`` feeds ``flow`` one answer per ``Cmd``/``Pipe`` it yields, in
order, and records the ops: an answer is the reply, an exception to throw into the flow (what
a driver does when the connection breaks), or a function of the op returning either. ``Sleep``
is recorded and not slept; ``Deadline`` is answered ``deadline_in`` seconds from now (negative:
the deadline has passed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from redis_ckpt.core.config import StoreConfig
from redis_ckpt.core.ops import Cmd, Deadline, Pipe, Script, Sleep
from redis_ckpt.core.store_core import StoreCore

T = TypeVar("T")
OK_FSYNC = [1, 0]  # WAITAOF 1 0: the local AOF fsync confirmed


class Scripted:
    def __init__(self, *answers: Any, deadline_in: float = 15.0) -> None:
        self.answers = list(answers)
        self.deadline_in = deadline_in
        self.ops: list[Cmd | Pipe] = []
        self.sleeps: list[float] = []

    def run(self, flow: Generator[Any, Any, T]) -> T:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                assert not self.answers, f"the flow ended with answers left: {self.answers!r}"
                return done.value  # type: ignore[no-any-return]
            reply, error = None, None
            if isinstance(op, Sleep):
                self.sleeps.append(op.seconds)
                continue
            if isinstance(op, Deadline):
                reply = time.monotonic() + self.deadline_in
                continue
            self.ops.append(op)
            assert self.answers, f"the flow sent more than the script answers: {op!r}"
            answer = self.answers.pop(0)
            if callable(answer) and not isinstance(answer, BaseException):
                answer = answer(op)
            if isinstance(answer, BaseException):
                error = answer
            else:
                reply = answer

    def scripts(self, name: str | None = None) -> list[Script]:
        """The scripts sent, in order (of one name)."""
        return [o for op in self.ops if isinstance(op, Pipe) for o in op.ops
                if isinstance(o, Script) and name in (None, o.name)]


def core(**options: Any) -> StoreCore:
    return StoreCore(StoreConfig(namespace="ns", **options))


def fields(script: Script) -> dict[str, str]:
    """commit.lua's ARGV[1] of ``script``, by name."""
    from redis_ckpt.core.contract import CommitFields

    return dict(zip(CommitFields._fields, script.args[0].split("\n")))


def replies_for(pipe: Pipe, script_reply: Any, answer: Callable[[Cmd], Any] | None = None) -> list[Any]:
    """A reply for each op of ``pipe``: ``script_reply`` for its script, OK for staging, the
    EXEC's list of its queued replies, WAITAOF's confirmation (``answer(cmd)`` first, if given)."""
    out: list[Any] = []
    queued: list[Any] | None = None
    for op in pipe.ops:
        if isinstance(op, Script):
            out.append(script_reply)
            continue
        name = str(op.args[0]).upper()
        mine = answer(op) if answer is not None else None
        if mine is not None:
            reply = mine
        elif name == "MULTI":
            queued, reply = [], b"OK"
        elif name == "EXEC":
            reply, queued = queued, None
        elif name == "WAITAOF":
            reply = OK_FSYNC
        else:
            reply = 1 if name in ("HSET", "PEXPIRE") else b"OK"
        if queued is not None and name != "MULTI":
            queued.append(reply)
            reply = b"QUEUED"
        out.append(reply)
    return out
