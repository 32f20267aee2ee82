"""The op vocabulary of the sans-IO core: what a flow yields and what it receives.

A flow is a generator that yields ``Cmd``/``Pipe``/``Sleep`` ops and receives their replies;
the drivers (``redis_ckpt.drivers``) run flows on redis-py clients. This module imports no
I/O library."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, Union

__all__ = ["Cmd", "Script", "Pipe", "Sleep", "Deadline", "Op", "Flow", "ScriptSource"]

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
    """Maps a script name to (sha1, source). Implemented by ``_scripts.Scripts``."""

    def sha(self, name: str) -> str: ...

    def source(self, name: str) -> str: ...
