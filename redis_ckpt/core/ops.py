"""The op vocabulary of the sans-IO core: what a flow yields and what it receives.

A flow is a generator that yields ``Cmd``/``Pipe``/``Sleep``/``Deadline`` ops and receives
their replies; the drivers (``redis_ckpt.drivers``) run flows on redis-py clients. When an op
fails, the driver throws one of the neutral failures below into the flow (a ``Pipe`` returns
a server error in place, as a :class:`ReplyError`): a flow never sees an I/O library's
exceptions, and this module imports none."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, Union

__all__ = [
    "Cmd", "Script", "Pipe", "Sleep", "Deadline", "Op", "Flow", "ScriptSource",
    "Failure", "ReplyError", "ConnectionLost",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Cmd:
    args: tuple[Any, ...]

    def __init__(self, *args: Any) -> None:
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class Script:
    name: str
    keys: Sequence[str] = ()
    args: Sequence[Any] = ()


@dataclass(frozen=True)
class Pipe:
    ops: Sequence[Cmd | Script]
    route: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Deadline:
    """The operation ends ``seconds`` after it started; answered with the deadline
    (``time.monotonic()``). The driver's clock starts at the first one it sees, unless the
    driver was started with a deadline."""

    seconds: float


Op = Union[Cmd, Pipe, Sleep, Deadline]
Flow = Generator[Op, Any, T]


class ScriptSource(Protocol):
    """Maps a script name to (sha1, source). Implemented by ``drivers.scripts.Scripts``."""

    def sha(self, name: str) -> str: ...

    def source(self, name: str) -> str: ...


# --------------------------------------------------------------------------- failures


class Failure(Exception):
    """What a driver throws into a flow when an op fails (or returns in place in a Pipe).

    ``kind`` names what the driver met (the client library's exception class), for messages.
    """

    kind: str


class ReplyError(Failure):
    """The server answered an error reply (a script's refusal included).

    ``code`` is the reply's first word (``FENCED``, ``NOPERM``, ...), ``fields`` the words
    after it, both parsed once here.
    """

    def __init__(self, message: str, kind: str = "ResponseError") -> None:
        super().__init__(message)
        self.kind = kind
        code, _, rest = message.partition(" ")
        self.code = code
        self.fields = rest.split(" ") if rest else []


class ConnectionLost(Failure):
    """The connection broke, timed out, or the server cannot serve yet (LOADING): the op
    may or may not have reached the server. An operation safe to repeat sends it again."""

    def __init__(self, detail: str, *, timed_out: bool = False, kind: str = "ConnectionError") -> None:
        super().__init__(detail)
        self.timed_out = timed_out
        self.kind = kind
