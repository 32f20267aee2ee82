"""Key names of a run. Every key of a run shares the hash tag ``{<run_id>}``.

Scripts never build key names: every name is made here and passed in KEYS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from ..errors import InvalidRunIdError

__all__ = ["RunKeys", "validate_run_id", "validate_owner", "validate_namespace", "glob_escape"]

MAX_RUN_ID = 200
MAX_OWNER = 200


def _check_text(kind: str, value: object, limit: int, *, allow_space: bool) -> str:
    if not isinstance(value, str):
        raise InvalidRunIdError(f"{kind} must be str, got {type(value).__name__}", value=value)
    if not value:
        raise InvalidRunIdError(f"{kind} must not be empty", value=value)
    if len(value) > limit:
        raise InvalidRunIdError(f"{kind} is {len(value)} characters long; the limit is {limit}", value=value)
    # the common case in C: printable (no lone surrogate, no control or separator character;
    # the ASCII space is the one printable space character)
    if value.isprintable() and (allow_space or " " not in value):
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRunIdError(f"{kind} {value!r} is not valid UTF-8 (lone surrogate)", value=value) from None
    for ch in value:
        if not ch.isprintable() or (ch.isspace() and not (allow_space and ch == " ")):
            raise InvalidRunIdError(f"{kind} {value!r} contains a non-printable or space character {ch!r}", value=value)
    return value


def validate_run_id(run_id: object) -> str:
    """A run id: 1-200 printable characters, no spaces, no ``{``/``}`` (they would change the hash slot)."""
    if isinstance(run_id, bytes):
        try:
            run_id = run_id.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRunIdError(f"run id {run_id!r} is not UTF-8", value=run_id) from None
    value = _check_text("run id", run_id, MAX_RUN_ID, allow_space=False)
    if "{" in value or "}" in value:
        raise InvalidRunIdError(f"run id {value!r} must not contain '{{' or '}}' (they pick the hash slot)", value=value)
    return value


def validate_owner(owner: object) -> str:
    """An owner name: 1-200 printable characters (spaces allowed)."""
    return _check_text("owner", owner, MAX_OWNER, allow_space=True)


def validate_namespace(namespace: object) -> str:
    value = _check_text("namespace", namespace, 100, allow_space=False)
    if "{" in value or "}" in value or ":" in value:
        raise InvalidRunIdError(f"namespace {value!r} must not contain '{{', '}}' or ':'", value=value)
    return value


@dataclass(frozen=True)
class RunKeys:
    namespace: str
    run_id: str

    @cached_property
    def base(self) -> str:
        return f"{self.namespace}:{{{self.run_id}}}"

    @cached_property
    def fence(self) -> str:
        return f"{self.base}:fence"

    @cached_property
    def lease(self) -> str:
        return f"{self.base}:lease"

    @cached_property
    def head(self) -> str:
        return f"{self.base}:head"

    @cached_property
    def events(self) -> str:
        return f"{self.base}:events"

    @cached_property
    def staging(self) -> str:
        """Hash {commit id: "token:expected:count:bytes"} of the commits whose data is staged."""
        return f"{self.base}:staging"

    def generation(self, n: int) -> str:
        return f"{self.base}:g:{n}"

    def chunk(self, n: int, i: int) -> str:
        return f"{self.base}:g:{n}:c:{i}"

    def stage(self, commit_id: str, i: int) -> str:
        return f"{self.base}:stage:{commit_id}:{i}"

    def generation_keys(self, n: int, chunks: int) -> list[str]:
        """g:<n> and its chunk keys: everything a generation occupies."""
        return [self.generation(n), *(self.chunk(n, i) for i in range(chunks))]

    @staticmethod
    def scan_pattern(namespace: str) -> str:
        """SCAN MATCH pattern that finds every run's fence in a namespace.

        The namespace is escaped: ``job[1]`` matches the literal ``job[1]``, never ``job1``.
        """
        return f"{glob_escape(namespace)}:{{*}}:fence"

    @staticmethod
    def run_id_from_key(namespace: str, key: str) -> str | None:
        """The run id of ``<namespace>:{<run>}:...``; None for any other key (another
        namespace, or a name no :class:`RunKeys` builds: a run id that would not validate)."""
        prefix = f"{namespace}:{{"
        if not key.startswith(prefix):
            return None
        end = key.find("}", len(prefix))
        if end < 0 or not key.startswith("}:", end):
            return None
        try:
            return validate_run_id(key[len(prefix):end])
        except InvalidRunIdError:
            return None


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob pattern matching exactly itself (``*?[]\\`` backslash-escaped)."""
    return _GLOB_SPECIAL.sub(r"\\\g<0>", text)


_GLOB_SPECIAL = re.compile(r"[\\*?\[\]]")
