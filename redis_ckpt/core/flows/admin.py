"""Inspection and admin flows: a run's info, its audit events, the runs of a namespace, and
delete (the run's data goes, its fence stays as a tombstone)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ...errors import InvalidOptionError
from ...models import Event, RunInfo, ms_to_datetime
from ..config import MAX_INT, check_int
from ..contract import delete_script, deleted_of, entry, head_of, kept, lease_of, stage_keys, staged, stored_int
from ..keys import RunKeys, validate_owner
from ..ops import Cmd, Flow, Pipe, ReplyError
from ..replies import hash_of, raise_failures, text
from .base import FlowsBase
from .commit import CommitFlows
from .confirm import confirmed_reply, drift_unread
from .headless import committed_before, lost_entries
from .shared import SHARED_SENDS

__all__ = ["AdminFlows", "event_of"]

_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # an audit event's id (Event.id)

#: keys a SCAN call looks at when listing runs
RUNS_SCAN_COUNT = 1000


class AdminFlows(CommitFlows, FlowsBase):
    def info_flow(self, run_id: str) -> Flow[RunInfo]:
        k = self.keys(run_id)

        def body() -> Flow[RunInfo]:
            replies = yield Pipe(
                [Cmd("GET", k.fence), Cmd("HGETALL", k.head), Cmd("HGETALL", k.lease), Cmd("PTTL", k.lease),
                 Cmd("HGETALL", k.staging), Cmd("PTTL", k.head), Cmd("PTTL", k.fence),
                 Cmd("XREVRANGE", k.events, "+", "-", "COUNT", 1)],
                route=k.fence,
            )
            raise_failures(replies)
            fence, head, lease, pttl, registry, head_ttl, fence_ttl, newest = replies
            fence = stored_int(k.run_id, "fence", fence or 0)
            head, lease = head_of(k.run_id, hash_of(head)), lease_of(k.run_id, hash_of(lease))
            staged_commits, staged_bytes = yield from self.staged_size(k, hash_of(registry))
            held = lease.get("state") == "held"
            last = event_of(*newest[0]) if newest else None
            # no head, yet a fence and events other than a delete's: committed once (damage), or
            # only acquired? The audit stream tells (no SCAN: listings visit every run)
            head_lost = (not head and fence > 0 and last is not None and last.kind != "delete"
                         and (yield from committed_before(k, scan=False)))
            return RunInfo(
                run_id=k.run_id, fence=fence, generation=int(head.get("generation", 0)),
                kept=tuple(g for g, _ in kept(head)), head=head,
                lease_owner=lease.get("owner"), lease_token=int(lease["token"]) if "token" in lease else None,
                lease_ms_left=int(pttl) if held and int(pttl) > 0 else None,
                lease_state=lease.get("state"), staged_commits=staged_commits, staged_bytes=staged_bytes,
                expires_ms_left=int(head_ttl) if int(head_ttl) >= 0 else None,
                fence_ms_left=int(fence_ttl) if int(fence_ttl) >= 0 else None,
                last_event=last.kind if last else None,
                last_event_ms=_event_ms(last) if last else None,
                head_lost=head_lost,
            )

        return self.retrying(body, run_id=k.run_id, what="info", writes=False)

    def staged_size(self, k: RunKeys, registry: Mapping[str, str]) -> Flow[tuple[int, int]]:
        """(commits, bytes) of the run's staged data still there: the sizes the staging hash
        records, for the commits whose staged keys exist (one EXISTS per commit)."""
        entries = [(v, keys) for cid, v in sorted(registry.items()) if (keys := stage_keys(k, staged({cid: v})))]
        if not entries:
            return 0, 0
        present = yield Pipe([Cmd("EXISTS", *keys) for _, keys in entries], route=k.fence)
        commits = total = 0
        for (value, _), n in zip(entries, present):
            parts = value.split(":")
            if isinstance(n, int) and n > 0:
                commits += 1
                total += int(parts[3]) if len(parts) == 4 and parts[3].isdigit() else 0
        return commits, total

    def events_flow(self, run_id: str, *, count: int = 100, after: str | None = None) -> Flow[list[Event]]:
        """Audit events, oldest first: the newest ``count``, or those after id ``after``."""
        k = self.keys(run_id)
        check_int("count", count, 1, MAX_INT, run_id=k.run_id)
        if after is not None and not (isinstance(after, str) and _STREAM_ID.fullmatch(after)):
            raise InvalidOptionError(f"after must be an event id such as '1700000000000-0', got {after!r}",
                                     argument="after")

        def body() -> Flow[list[Event]]:
            if after is None:
                raw = list(reversed((yield Cmd("XREVRANGE", k.events, "+", "-", "COUNT", count)) or []))
            else:
                raw = (yield Cmd("XRANGE", k.events, f"({after}", "+", "COUNT", count)) or []
            return [event_of(i, f) for i, f in raw]

        return self.retrying(body, run_id=k.run_id, what="events", writes=False)

    def delete_flow(self, run_id: str, by: str) -> Flow[int]:
        k = self.keys(run_id)
        by = validate_owner(by)
        registered: list[str] = []
        shared: list[str] = []  # the run's shared chunks (x:refs), all deleted with it

        delete_id = os.urandom(8).hex()  # the same in every attempt: a resend of an applied one is known

        def build(entries: list[str], _dead: list[str], _strict: bool) -> Any:
            return delete_script(k, by=by, maxlen=self.config.events_maxlen, delete_id=delete_id, entries=entries,
                                 staged=registered, shared=shared)

        def body() -> Flow[int]:
            for _ in range(SHARED_SENDS):  # NEED_SHARED: the shared chunks changed meanwhile
                replies = yield Pipe([Cmd("HGETALL", k.head), Cmd("HGETALL", k.staging), Cmd("HGETALL", k.refs)],
                                     route=k.head)
                raise_failures(replies)
                head, registry, refs = replies
                registered[:] = staged(hash_of(registry))
                shared[:] = sorted(hash_of(refs))
                # only the kept list is read: a head damaged elsewhere can still be deleted
                entries = [entry(g, c) for g, c in kept(head_of(k.run_id, {"kept": hash_of(head).get("kept", "")}))]
                if not hash_of(head) and (yield from committed_before(k)):  # its head was lost
                    entries = yield from lost_entries(k)  # what no head names: found by SCAN
                replies = yield from self.with_keys(build, entries, route=k.fence, run_id=k.run_id, what="delete")
                if not (isinstance(replies[0], ReplyError) and replies[0].code == "NEED_SHARED"):
                    break
                drift_unread(replies, self.config)
            deleted = deleted_of(confirmed_reply(replies, self.config, what="delete", run_id=k.run_id))
            self.retained.discard(k.run_id)  # a run made again under this id has no retention of its own
            return deleted

        return self.retrying(body, run_id=k.run_id, what="delete", writes=True)

    def runs_flow(self, *, limit: int | None = None) -> Flow[list[str]]:
        """Run ids in this namespace (SCAN over fence keys: every run that ever had a lease or commit)."""
        if limit is not None:
            check_int("limit", limit, 1, MAX_INT)
        namespace = self.config.namespace
        pattern = RunKeys.scan_pattern(namespace)

        def body() -> Flow[list[str]]:
            found: set[str] = set()
            cursor: Any = 0
            while True:
                cursor, batch = yield Cmd("SCAN", cursor, "MATCH", pattern, "COUNT", RUNS_SCAN_COUNT)
                for key in batch:
                    rid = RunKeys.run_id_from_key(namespace, text(key))
                    if rid is not None:
                        found.add(rid)
                if int(cursor) == 0 or (limit is not None and len(found) >= limit):
                    break
            runs = sorted(found)
            return runs[:limit] if limit is not None else runs

        return self.retrying(body, run_id=None, what="runs", writes=False)


def event_of(entry_id: Any, fields: Any) -> Event:
    """A stream entry of a run's audit events."""
    f = hash_of(fields)
    eid = text(entry_id)
    ms = f.get("ms") or eid.partition("-")[0]  # a stream entry id is "<ms>-<seq>"
    return Event(id=eid, kind=f.get("kind", "?"), at=ms_to_datetime(int(ms)) if ms.isdigit() else None, fields=f)


def _event_ms(e: Event) -> int | None:
    """The server time (ms) of an event: its ``ms`` field, else its entry id's."""
    ms = e.fields.get("ms") or e.id.partition("-")[0]
    return int(ms) if ms.isdigit() else None
