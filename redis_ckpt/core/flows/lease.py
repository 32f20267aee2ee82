"""Lease flows: acquire (a new fencing token), renew, release, and revoke (an admin fences
every holder off). The scripts decide (lua/acquire.lua, renew.lua, release.lua, revoke.lua);
these flows send them and name their answers."""

from __future__ import annotations

from ...errors import LeaseHeldError, LeaseLostError
from ...models import Grant
from ..config import MAX_INT, check_int, check_ttl_ms
from ..contract import acquire_script, damaged_refusal, grant_of, refusal, release_script, renew_script, \
    revoke_script
from ..keys import validate_owner
from ..ops import Flow, Pipe, ReplyError
from .base import FlowsBase, not_converged, out_of_range
from .commit import MAX_SENDS
from .confirm import check_confirmed, confirmed, confirmed_reply, drift_unread
from .shared import shared_addresses

__all__ = ["LeaseFlows"]

#: acquire answers NEED_STAGE (staged commits whose keys it was not given) at most this many
#: times strictly; then it applies and leaves the rest to their TTL
STRICT_ACQUIRES = 5


class LeaseFlows(FlowsBase):
    def acquire_flow(self, run_id: str, owner: str, ttl_ms: int, retention_ms: int | None = None) -> Flow[Grant]:
        """A new token and the lease. ``retention_ms``: this run's retention from now on
        (None: the store's; neither: the run's own, if it has one)."""
        k = self.keys(run_id)
        owner = validate_owner(owner)
        check_ttl_ms(ttl_ms, run_id=k.run_id)
        retention = self.config.retention_ms if retention_ms is None else retention_ms
        if retention is not None:
            check_int("retention (ms)", retention, 1, MAX_INT, run_id=k.run_id)

        def body() -> Flow[Grant]:
            c = self.config
            dead: list[str] = []
            entries = self.kept_guess(k.run_id) if retention or k.run_id in self.retained else []
            shared: list[str] = []  # under a retention: the run's shared chunks (they get its expiry)
            strict = 0
            for _ in range(STRICT_ACQUIRES + MAX_SENDS):
                # staged commits are all dead once the fence moves; the script names those it
                # was not given (NEED_STAGE, nothing written) and removes the ones it was
                script = acquire_script(k, owner=owner, ttl_ms=ttl_ms, maxlen=c.events_maxlen,
                                        strict=strict < STRICT_ACQUIRES, dead=dead, retention_ms=retention or 0,
                                        margin_ms=c.fence_margin_ms, entries=entries, shared=shared)
                replies = yield confirmed([script], c, route=k.fence)
                reply = replies[0]
                if isinstance(reply, ReplyError):
                    drift_unread(replies, c)
                    if reply.code == "NEED_STAGE":
                        dead = sorted(set(dead) | set(reply.fields))
                        strict += 1
                        continue
                    if reply.code == "NEED_KEYS":  # under a retention: the kept generations' keys
                        entries = sorted(set(entries) | set(reply.fields))
                        self.retained.add(k.run_id)  # its commits pass them at once
                        continue
                    if reply.code == "NEED_SHARED":  # under a retention: every chunk x:refs names
                        shared = yield from shared_addresses(k)  # what x:refs names now
                        continue
                    if reply.code == "LEASE_HELD":
                        r = refusal(reply)
                        raise LeaseHeldError(k.run_id, owner=r["owner"], ms_left=int(r["ms_left"]))
                    if reply.code == "OUT_OF_RANGE":
                        raise out_of_range(k.run_id, refusal(reply), "acquire")
                    if reply.code == "DAMAGED":
                        raise damaged_refusal(k.run_id, refusal(reply))
                    raise reply
                if isinstance(reply, Exception):
                    raise reply
                grant = grant_of(reply)
                check_confirmed(replies, c, what="acquire", run_id=k.run_id, generation=None)
                if grant.generation == 0 and not retention:  # no head: the run has no retention of its own
                    self.retained.discard(k.run_id)  # (it expired, or was deleted elsewhere)
                return grant
            raise not_converged(k.run_id, "acquire", STRICT_ACQUIRES + MAX_SENDS)

        return self.retrying(body, run_id=k.run_id, what="acquire", writes=True)

    def renew_flow(self, run_id: str, owner: str, token: int, ttl_ms: int) -> Flow[int]:
        k = self.keys(run_id)
        check_ttl_ms(ttl_ms, run_id=k.run_id)

        def body() -> Flow[int]:
            script = renew_script(k, token=token, ttl_ms=ttl_ms, owner=owner, maxlen=self.config.events_maxlen)
            reply = (yield Pipe([script], route=k.lease))[0]
            if isinstance(reply, ReplyError):
                if reply.code == "LEASE_LOST":
                    r = refusal(reply)
                    raise LeaseLostError(k.run_id, token=token, holder=r["holder_owner"] or None,
                                         holder_token=int(r["holder_token"]) or None, fence=int(r["fence"]))
                if reply.code == "OUT_OF_RANGE":
                    raise out_of_range(k.run_id, refusal(reply), "renew")
            if isinstance(reply, Exception):
                raise reply
            return int(reply)

        # a renew whose reply is lost may have applied: a resend renews again, a timeout is
        # outcome_unknown
        return self.retrying(body, run_id=k.run_id, what="renew", writes=True)

    def release_flow(self, run_id: str, owner: str, token: int) -> Flow[bool]:
        """True when this call released the lease; False when ``token`` no longer held it."""
        k = self.keys(run_id)
        sent = [0]  # attempts that went out: from the second on, a resend after a lost reply

        def body() -> Flow[bool]:
            sent[0] += 1
            script = release_script(k, token=token, owner=owner, maxlen=self.config.events_maxlen)
            reply = (yield Pipe([script], route=k.lease))[0]
            if isinstance(reply, Exception):
                raise reply
            # 2: already released by this token; on a resend, by this call's earlier attempt
            return int(reply) == 1 or (int(reply) == 2 and sent[0] > 1)

        return self.retrying(body, run_id=k.run_id, what="release", writes=True)

    def revoke_flow(self, run_id: str, by: str) -> Flow[int]:
        k = self.keys(run_id)
        by = validate_owner(by)

        def body() -> Flow[int]:
            replies = yield confirmed([revoke_script(k, by=by, maxlen=self.config.events_maxlen)], self.config,
                                      route=k.fence)
            return int(confirmed_reply(replies, self.config, what="revoke", run_id=k.run_id))

        return self.retrying(body, run_id=k.run_id, what="revoke", writes=True)
