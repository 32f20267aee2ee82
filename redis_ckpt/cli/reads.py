"""Reading one run's stored data for a command: the run must exist, and data redis-ckpt never
wrote (a number it cannot parse, text that is not UTF-8, ...) is a definite "no" (exit 1)
that names the run, never an unexpected error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .. import Checkpoint, CheckpointError, RunInfo, RunUsage, ServerError, StoreUnavailableError
from ..core.keys import validate_run_id
from .exits import EXIT_NO, CliFailure, NoSuchRun
from .options import CliConfig

__all__ = ["Unreadable", "run_info", "read", "try_read", "usage_or_none", "load_as_stored"]

T = TypeVar("T")


class Unreadable(CliFailure):
    """A run's stored data is not what redis-ckpt writes (exit 1); ``reason`` says why."""

    def __init__(self, run: str, reason: str, secrets: tuple[str, ...]) -> None:
        super().__init__(f"cannot read run {run!r}: {reason}", EXIT_NO, secrets=secrets)
        self.reason = reason


def run_info(cfg: CliConfig, run: str) -> RunInfo:
    """The run's summary; :class:`NoSuchRun` when it has neither a fence nor a head."""
    validate_run_id(run)  # a bad id is a usage error before anything connects
    info = read(cfg, run, cfg.store.info, run)
    if not info.exists:
        raise NoSuchRun(run, cfg.namespace)
    return info


def read(cfg: CliConfig, run: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, a read of one run's stored data; :class:`Unreadable` when that
    data cannot be parsed."""
    try:
        return fn(*args, **kwargs)
    except CheckpointError:
        raise  # its own exit code (exits.failure_for)
    except Exception as exc:  # noqa: BLE001 - stored data the store cannot parse
        raise Unreadable(run, f"its stored data is not what redis-ckpt writes ({type(exc).__name__}: {exc})",
                         cfg.secrets) from None


def try_read(cfg: CliConfig, run: str, fn: Callable[..., T], *args: Any) -> T | str:
    """``fn(*args)``, or why the run's data cannot be read (a listing goes on with the next run).
    The server going away still ends the command."""
    try:
        return read(cfg, run, fn, *args)
    except StoreUnavailableError:
        raise
    except Unreadable as failure:
        return failure.reason
    except CheckpointError as exc:
        return str(exc)


def usage_or_none(cfg: CliConfig, run: str) -> RunUsage | None:
    """The run's bytes, or None where the server denies or lacks MEMORY USAGE (ACL)."""
    try:
        return cfg.store.usage(run)
    except ServerError:
        return None


def load_as_stored(cfg: CliConfig, run: str, generation: int | None = None) -> Checkpoint | None:
    """The newest good generation (or ``generation``) of ``run`` with its state as stored:
    the CLI has none of an application's migrations, and shows a run of any schema as it is
    (``schema_version`` is then the stored one). A load of the library migrates or refuses."""
    return cfg.store.run(cfg.store.core.load_flow(run, generation, migrate=False))
