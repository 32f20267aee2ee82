"""The scripts' contract, in one place: what each Lua script in ``lua/`` is given (its KEYS
and ARGV, built by one function per script from named values) and what it answers (read by
name). ``tests/test_contract.py`` pins every name and position here to the scripts' headers.

Also the layouts the scripts and the flows share: the head's ``kept`` list of
``"<g>:<chunks>"`` entries, the staging hash's ``"<token>:<expected>:<count>:<bytes>"``, and
the one check of what a run's fence, head and lease hold (:func:`head_of`, :func:`lease_of`,
:func:`stored_int`): data redis-ckpt never wrote is a CorruptCheckpointError naming the run and
the field, never a raw ValueError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import CorruptCheckpointError
from ..models import Grant
from .keys import RunKeys
from .ops import ReplyError, Script
from .replies import text

__all__ = [
    "CommitFields", "COMMIT_FIELD_NAMES", "COMMIT_KEYS", "SCRIPT_KEYS", "SCRIPT_ARGV", "ERROR_FIELDS",
    "commit_script", "acquire_script", "renew_script", "release_script", "revoke_script", "delete_script",
    "retain_script", "prune_script", "load_script", "LOAD_FIELDS",
    "refusal", "commit_generation", "grant_of", "deleted_of",
    "entry", "kept", "kept_times", "staged", "stage_keys", "drop_keys",
    "HEAD_NUMBERS", "LEASE_NUMBERS", "damaged", "damaged_refusal", "stored_int", "head_of", "lease_of",
]


# --------------------------------------------------------------------------- commit.lua


class CommitFields(NamedTuple):
    """ARGV[1] of commit.lua: its scalar fields, in the header's order, sent joined by "\\n"
    (one argument to encode and send; none of them can hold a newline: numbers, hex, and
    owner/by names validated as printable)."""

    mode: str  # "commit" | "import" | "dedup" (ARGV[2] a shared-chunk manifest, see core/dedup.py)
    token: int
    expected: int  # the expected generation (commit; import: 0)
    commit_id: str
    checksum: str  # of the whole frame, hex
    schema_version: int
    codec: int
    owner: str
    keep: int
    maxlen: int  # events stream max length
    generation: int  # the new generation number
    size: int  # of the whole frame
    chunks: int  # 0: not chunked
    by: str  # who imported (import only)
    staged: int  # number of staged keys s
    resend: int  # 1: an earlier attempt of this commit id went out, its outcome unknown
    drops: int  # number of drop entries d
    stage_limit: int  # bytes of other commits' staged data above which all of it is removed
    strict: int  # 1: answer NEED_STAGE for dead staged commits whose keys were not passed
    retention: int = 0  # ms; 0: the run's own (the head's retention_ms), if any
    margin: int = 0  # ms the fence outlives the data under a retention


#: each CommitFields field as commit.lua's header names it ("1 mode (...), 2 token, ...")
COMMIT_FIELD_NAMES = {
    "mode": "mode", "token": "token", "expected": "expected generation", "commit_id": "commit id",
    "checksum": "checksum", "schema_version": "schema version", "codec": "codec", "owner": "owner",
    "keep": "keep", "maxlen": "events max length", "generation": "the new generation number",
    "size": "size", "chunks": "number of chunks", "by": "who imported", "staged": "number of staged keys",
    "resend": "resend", "drops": "number of drop entries", "stage_limit": "stage limit", "strict": "strict",
    "retention": "retention", "margin": "fence margin",
}

#: the fixed KEYS of each script, in order, as its header names them (variable keys follow)
COMMIT_KEYS = ("fence", "head", "events", "lease", "staging")
SCRIPT_KEYS = {
    "commit": COMMIT_KEYS,
    "acquire": ("fence", "lease", "head", "events", "staging"),
    "renew": ("fence", "lease", "events"),
    "release": ("lease", "events"),
    "revoke": ("fence", "lease", "events"),
    "delete": ("fence", "lease", "head", "events", "staging"),
    "retain": ("fence", "lease", "head", "events", "staging"),
    "prune": ("fence", "lease", "head", "events", "staging"),
    "load": ("head",),
}
#: the fixed ARGV of each script but commit, in order: (the builder's argument, the words the
#: header starts that ARGV's line with)
SCRIPT_ARGV = {
    "acquire": (("owner", "owner"), ("ttl_ms", "ttl"), ("maxlen", "events stream max length"),
                ("strict", "strict"), ("retention_ms", "retention"), ("margin_ms", "fence margin"),
                ("entries", "number of generation entries")),
    "renew": (("token", "token"), ("ttl_ms", "new ttl"), ("owner", "owner"), ("maxlen", "events stream max length")),
    "release": (("token", "token"), ("owner", "owner"), ("maxlen", "events stream max length")),
    "revoke": (("by", "who revoked"), ("maxlen", "events stream max length")),
    "delete": (("by", "who deleted"), ("maxlen", "events stream max length"), ("delete_id", "delete id"),
               ("entries", "number of generation entries")),
    "retain": (("token", "token"), ("owner", "owner"), ("retention_ms", "retention"), ("margin_ms", "fence margin"),
               ("maxlen", "events stream max length"), ("entries", "number of generation entries")),
    "prune": (("by", "who pruned"), ("idle_ms", "idle"), ("dry", "dry run"),
              ("entries", "number of generation entries")),
}


def commit_script(k: RunKeys, fields: CommitFields, stored: Any, moved: Sequence[str],
                  drop: Sequence[str], dead: Sequence[str], free: Sequence[str] = ()) -> Script:
    """commit.lua with ``fields``: ``stored`` is the frame or manifest (empty when staged),
    ``moved`` the staged keys followed by the keys they become (``fields.staged`` each),
    ``drop`` the generations offered for rotation and ``dead`` the dead staged commits whose
    keys are passed for removal (``fields.drops`` is ``len(drop)``); ``free`` the addresses
    of shared chunks offered for freeing (their keys follow the run's x:refs; under a
    retention every one x:refs names: they get the new expiry)."""
    return Script(
        "commit",
        [k.fence, k.head, k.events, k.lease, k.staging, k.generation(fields.generation), *moved,
         *drop_keys(k, drop), *stage_keys(k, dead), k.refs, *(k.shared(a) for a in free)],
        ["\n".join(map(str, fields)), stored, *drop, *dead],
    )


def acquire_script(k: RunKeys, *, owner: str, ttl_ms: int, maxlen: int, strict: bool, dead: Sequence[str],
                   retention_ms: int = 0, margin_ms: int = 0, entries: Sequence[str] = (),
                   shared: Sequence[str] = ()) -> Script:
    """acquire.lua; ``retention_ms`` 0: the run's own retention, if any (then ``entries``, the
    kept generations, and ``shared``, the addresses of the run's shared chunks (its x:refs
    fields), are needed: the script answers NEED_KEYS / NEED_SHARED for those missing)."""
    return Script("acquire", [k.fence, k.lease, k.head, k.events, k.staging, *drop_keys(k, entries),
                              *stage_keys(k, dead), k.refs, *(k.shared(a) for a in shared)],
                  [owner, ttl_ms, maxlen, int(strict), retention_ms, margin_ms, len(entries), *entries, *dead])


def renew_script(k: RunKeys, *, token: int, ttl_ms: int, owner: str, maxlen: int) -> Script:
    return Script("renew", [k.fence, k.lease, k.events], [token, ttl_ms, owner, maxlen])


def release_script(k: RunKeys, *, token: int, owner: str, maxlen: int) -> Script:
    return Script("release", [k.lease, k.events], [token, owner, maxlen])


def revoke_script(k: RunKeys, *, by: str, maxlen: int) -> Script:
    return Script("revoke", [k.fence, k.lease, k.events], [by, maxlen])


#: the head fields a load reads, in the order load.lua returns them (then the guessed value)
LOAD_FIELDS = ("generation", "kept", "checksum", "commit_id", "kept_ms")


def load_script(k: RunKeys, guesses: Sequence[int]) -> Script:
    """load.lua: the head's LOAD_FIELDS and the value of the guessed generation it names."""
    return Script("load", [k.head, *(k.generation(g) for g in guesses)], list(guesses))


def delete_script(k: RunKeys, *, by: str, maxlen: int, delete_id: str, entries: Sequence[str],
                  staged: Sequence[str], shared: Sequence[str] = ()) -> Script:
    """delete.lua; ``delete_id``: one per call, the same in every attempt (a resend of an
    applied one answers what it did); ``shared``: the addresses of the run's shared chunks
    (its x:refs fields)."""
    return Script("delete", [k.fence, k.lease, k.head, k.events, k.staging, *drop_keys(k, entries),
                             *stage_keys(k, staged), k.refs, *(k.shared(a) for a in shared)],
                  [by, maxlen, delete_id, len(entries), *entries, *staged])


def retain_script(k: RunKeys, *, token: int, owner: str, retention_ms: int, margin_ms: int, maxlen: int,
                  entries: Sequence[str], shared: Sequence[str] = ()) -> Script:
    """retain.lua; ``shared``: the addresses of the run's shared chunks (its x:refs fields),
    which expire with the generations listing them (NEED_SHARED when not all are passed)."""
    return Script("retain", [k.fence, k.lease, k.head, k.events, k.staging, *drop_keys(k, entries),
                             k.refs, *(k.shared(a) for a in shared)],
                  [token, owner, retention_ms, margin_ms, maxlen, len(entries), *entries])


def prune_script(k: RunKeys, *, by: str, idle_ms: int, dry: bool, entries: Sequence[str],
                 staged: Sequence[str], shared: Sequence[str] = ()) -> Script:
    """prune.lua; ``shared``: the addresses of the run's shared chunks (its x:refs fields)."""
    return Script("prune", [k.fence, k.lease, k.head, k.events, k.staging, *drop_keys(k, entries),
                            *stage_keys(k, staged), k.refs, *(k.shared(a) for a in shared)],
                  [by, idle_ms, int(dry), len(entries), *entries, *staged])


# --------------------------------------------------------------------------- answers

#: the fields of each error a flow reads, as the scripts' headers name them ("FENCED <token>
#: <fence>"); a name ending in "*" takes the rest of the reply (an owner may hold spaces)
ERROR_FIELDS = {
    "FENCED": ("token", "fence"),
    "FENCE_BEHIND": ("token", "fence"),
    "CONFLICT": ("expected", "actual"),
    "OUTCOME_UNKNOWN": ("code", "token", "fence", "expected", "actual"),
    "OUT_OF_RANGE": ("what", "value"),
    "LEASE_HELD": ("ms_left", "owner*"),
    "LEASE_LOST": ("fence", "holder_token", "holder_owner*"),
    "STAGE_MISSING": ("i",),
    "ACTIVE": ("idle_ms",),
    "KEPT": ("ms_left",),
    "DAMAGED": ("where", "value*"),
}


def refusal(err: ReplyError) -> dict[str, str]:
    """A script's error reply as {field name: value} (see ERROR_FIELDS); missing ones ""."""
    out: dict[str, str] = {}
    values = err.fields
    for i, name in enumerate(ERROR_FIELDS.get(err.code, ())):
        if name.endswith("*"):
            out[name[:-1]] = " ".join(values[i:])
        else:
            out[name] = values[i] if i < len(values) else ""
    return out


def commit_generation(reply: Any) -> int:
    """The generation of commit.lua's answer: ``generation`` (applied), ``{generation, "retry"}``
    (a resend of an applied commit) or ``{generation, fence}`` (import)."""
    return int(reply if isinstance(reply, int) else reply[0])


def grant_of(reply: Any) -> Grant:
    """acquire.lua's ``{token, head_generation, kind, previous_token}``."""
    token, generation, kind, previous = reply
    return Grant(int(token), int(generation), text(kind), int(previous))


def deleted_of(reply: Any) -> int:
    """The generations_deleted of delete.lua's ``{new_fence, generations_deleted}``."""
    return int(reply[1])


# --------------------------------------------------------------------------- shared layouts


def entry(g: int, chunks: int) -> str:
    """A generation as the scripts name it: ``"<g>:<chunks>"``."""
    return f"{g}:{chunks}"


def kept(head: Mapping[str, str]) -> list[tuple[int, int]]:
    """The head's kept generations as (generation, chunks), oldest first (of a head checked
    by :func:`head_of`)."""
    out = []
    for e in head.get("kept", "").split(","):
        if e:
            g, _, c = e.partition(":")
            out.append((int(g), int(c or 0)))
    return out


def kept_times(head: Mapping[str, str]) -> dict[int, int]:
    """generation -> server time (ms) of its commit, for the kept generations whose time the
    head recorded (``kept_ms``, aligned with ``kept``; "-" or absent for older heads)."""
    gens = [g for g, _ in kept(head)]
    times = head.get("kept_ms", "").split(",") if head.get("kept_ms") else []
    out = {}
    for g, t in zip(reversed(gens), reversed(times)):
        if t.isdigit():
            out[g] = int(t)
    return out


def staged(entries: Mapping[str, str]) -> list[str]:
    """The staging hash's entries as "<cid>:<count>" (what the scripts take)."""
    out = []
    for cid, value in entries.items():
        parts = value.split(":")
        out.append(f"{cid}:{parts[2] if len(parts) == 4 and parts[2].isdigit() else 0}")
    return sorted(out)


def stage_keys(k: RunKeys, dead: Iterable[str]) -> list[str]:
    """The staged keys of "<cid>:<count>" entries."""
    out: list[str] = []
    for e in dead:
        cid, _, count = e.rpartition(":")
        out += [k.stage(cid, i) for i in range(int(count))]
    return out


def drop_keys(k: RunKeys, entries: Iterable[str]) -> list[str]:
    """The keys of "<g>:<chunks>" entries: g:<g> then its chunk keys."""
    out: list[str] = []
    for e in entries:
        g, _, c = e.partition(":")
        out.append(k.generation(int(g)))
        if c != "0":
            out += [k.chunk(int(g), i) for i in range(int(c))]
    return out


# --------------------------------------------------------------------------- what a run's keys hold

#: the fields of a run's head the scripts write as a non-negative integer (see commit.lua)
HEAD_NUMBERS = ("generation", "token", "size", "chunks", "schema_version", "created_ms", "epoch", "retention_ms",
                "finished_ms")
#: likewise of its lease (see acquire.lua)
LEASE_NUMBERS = ("token", "ttl_ms", "acquired_ms", "renewed_ms", "released_ms")
#: the head's comma-separated lists: each entry's form, and how a message describes the list
HEAD_LISTS = {
    "kept": (re.compile(r"[0-9]+(:[0-9]+)?"), 'a comma-separated list of generations "<g>" or "<g>:<chunks>"'),
    "kept_ms": (re.compile(r"[0-9]+|-"), 'a comma-separated list of times in ms (or "-")'),
}
#: each list whole, in one match: entries of its form (or empty), comma-separated
_WHOLE_LISTS = {name: re.compile(f"(?:{form.pattern})?(?:,(?:{form.pattern})?)*")
                for name, (form, _) in HEAD_LISTS.items()}
#: how an error names each field (made once: head_of runs at every load)
_HEAD_WHERE = {name: f"head's {name!r}" for name in (*HEAD_NUMBERS, *HEAD_LISTS)}
_LEASE_WHERE = {name: f"lease's {name!r}" for name in LEASE_NUMBERS}


def damaged(run_id: str, where: str, value: str, expected: str) -> CorruptCheckpointError:
    """The error for a value redis-ckpt never writes in one of the run's keys (``where``: "fence",
    "head's 'generation'", "lease's 'token'", ...): changed by hand, or a partial restore.
    Raised before anything is written."""
    remedy = ("set it by hand to an integer above every token the run handed out (its head's and lease's "
              "'token', the tokens of its audit events), then try again" if where == "fence" else
              "restore the run from an exported frame, or delete it")
    return CorruptCheckpointError(
        run_id, {}, message=f"run {run_id!r} is damaged: its {where} is {value!r}, not {expected} as redis-ckpt "
                            f"writes it (changed by hand, or a partial restore); {remedy}")


def damaged_refusal(run_id: str, refused: Mapping[str, str]) -> CorruptCheckpointError:
    """The error for a script's "DAMAGED <where> <value>" answer (<where>: "fence", "head.kept", ...)."""
    key, _, field = refused["where"].partition(".")
    expected = HEAD_LISTS[field][1] if field in HEAD_LISTS else "a non-negative integer"
    return damaged(run_id, f"{key}'s {field!r}" if field else key, refused["value"], expected)


def stored_int(run_id: str, where: str, value: Any) -> int:
    """A non-negative integer redis-ckpt stored (the fence, a number of the head or lease)."""
    s = text(value)
    if not (s.isascii() and s.isdigit()):
        raise damaged(run_id, where, s, "a non-negative integer")
    return int(s)


def head_of(run_id: str, fields: Mapping[str, str]) -> dict[str, str]:
    """The run's head hash (or the fields of it that were read), checked: its numbers are
    numbers and its kept lists well formed; else :class:`CorruptCheckpointError` naming the
    field. Every flow reads a head through this before it parses one."""
    for name in HEAD_NUMBERS:
        if name in fields:
            stored_int(run_id, _HEAD_WHERE[name], fields[name])
    for name, whole in _WHOLE_LISTS.items():
        value = fields.get(name, "")
        if not whole.fullmatch(value):
            raise damaged(run_id, _HEAD_WHERE[name], value, HEAD_LISTS[name][1])
    return dict(fields)


def lease_of(run_id: str, fields: Mapping[str, str]) -> dict[str, str]:
    """The run's lease hash, its numbers checked as :func:`head_of` checks the head's."""
    for name in LEASE_NUMBERS:
        if name in fields:
            stored_int(run_id, _LEASE_WHERE[name], fields[name])
    return dict(fields)
