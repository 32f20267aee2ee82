"""The history checker on hand-made histories: a clean one passes, and each anomaly kind is found.

No server: these feed :func:`checker.check` histories built by hand, so that every check is
shown able to fail (and not to fire on what the store legitimately does: unknown outcomes
that applied, takeovers, deletes, resends).
"""

from __future__ import annotations

import json
from typing import Any

import checker
from checker import Op, check

RUN = "r0"


class History:
    """Builds a history: ``op(...)`` appends one operation with explicit invoke/complete times."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def op(self, process: str, what: str, t0: int, t1: int | None, outcome: str = "ok",
           args: dict[str, Any] | None = None, run: str = RUN, **result: Any) -> Op:
        o = Op(process, len(self.ops) + 1, what, run, t0, t1, outcome, dict(args or {}), dict(result))
        self.ops.append(o)
        return o

    def acquire(self, p: str, t0: int, t1: int, token: int, generation: int = 0) -> Op:
        return self.op(p, "acquire", t0, t1, token=token, generation=generation, kind="acquire")

    def commit(self, p: str, t0: int, t1: int | None, *, token: int, expected: int, cid: str,
               parent: str | None, outcome: str = "ok", run: str = RUN, **result: Any) -> Op:
        args = {"token": token, "expected": expected, "cid": cid, "parent": parent, "digest": f"d-{cid}"}
        if outcome == "ok" and "generation" not in result:
            result["generation"] = expected + 1
        return self.op(p, "commit", t0, t1, outcome, args, run=run, **result)

    def load(self, p: str, t0: int, t1: int, *, generation: int = 0, cid: str | None = None, token: int = 0,
             digest: str | None = None) -> Op:
        if not generation:
            return self.op(p, "load", t0, t1, generation=0)
        return self.op(p, "load", t0, t1, generation=generation, head=generation, token=token, cid=cid,
                       digest=digest or f"d-{cid}", skipped=[])


def kept(*gens: tuple[int, int, str]) -> list[dict[str, Any]]:
    """[(generation, token, cid)] as the final state lists them."""
    return [{"generation": g, "token": t, "cid": c, "digest": f"d-{c}"} for g, t, c in gens]


def final(generation: int, fence: int, *gens: tuple[int, int, str], deletes: dict[str, int] | None = None,
          run: str = RUN) -> dict[str, dict[str, Any]]:
    return {run: {"fence": fence, "generation": generation, "kept": kept(*gens), "damaged": [],
                  "deletes": deletes or {}}}


def only(report: checker.Report, name: str) -> None:
    """``name`` found (at least once), every other check clean."""
    assert report.anomalies[name] >= 1, report.as_dict()
    others = {k: v for k, v in report.anomalies.items() if k != name and v}
    assert not others, report.as_dict()


def clean_history() -> History:
    """Two workers hand the run over, an unknown commit applies, an admin deletes, a new chain starts."""
    h = History()
    h.acquire("a", 0, 10, token=1)
    h.load("a", 11, 12)
    h.commit("a", 13, 20, token=1, expected=0, cid="a-1", parent=None)
    h.commit("a", 21, 30, token=1, expected=1, cid="a-2", parent="a-1")
    h.op("a", "renew", 31, 32, args={"token": 1})
    h.commit("a", 33, None, token=1, expected=2, cid="a-3", parent="a-2", outcome="unknown",
             error="in flight when the process died")  # applied, as b's load shows
    h.acquire("b", 40, 45, token=2, generation=3)
    h.load("b", 46, 47, generation=3, cid="a-3", token=1)
    h.commit("b", 48, 50, token=2, expected=3, cid="b-1", parent="a-3")
    h.commit("a", 51, 52, token=1, expected=3, cid="a-4", parent="a-3", outcome="fail", error="FencedError")
    h.op("b", "release", 53, 54, args={"token": 2}, released=True)
    h.acquire("a", 55, 56, token=3, generation=4)
    h.load("a", 57, 58, generation=4, cid="b-1", token=2)
    h.commit("a", 59, 60, token=3, expected=4, cid="a-5", parent="b-1")
    # a resend after a takeover that is recognised as applied (the fixed store): ok, generation 6
    h.commit("a", 61, 75, token=3, expected=5, cid="a-6", parent="a-5")
    h.acquire("b", 62, 70, token=4, generation=6)
    h.load("b", 76, 77, generation=6, cid="a-6", token=3)
    h.op("admin", "delete", 80, 85, args={"by": "n-1"}, fence=5, generations=3)
    h.commit("b", 86, 87, token=4, expected=6, cid="b-2", parent="a-6", outcome="fail", error="FencedError")
    h.load("c", 88, 89)  # the run is gone
    h.acquire("c", 90, 91, token=6)
    h.load("c", 92, 93)
    h.commit("c", 94, 95, token=6, expected=0, cid="c-1", parent=None)
    h.load("a", 96, 97, generation=1, cid="c-1", token=6)
    return h


def clean_final() -> dict[str, dict[str, Any]]:
    return final(1, 6, (1, 6, "c-1"), deletes={"n-1": 5})


def test_a_clean_history_has_no_anomaly_and_counts_every_operation() -> None:
    h = clean_history()
    r = check(h.ops, clean_final(), [{"kind": "server kill -9"}, {"kind": "server kill -9"}, {"kind": "delete"}])
    assert r.ok, r.as_dict()
    assert r.count("commit", "ok") == 6 and r.count("commit", "fail") == 2 and r.count("commit", "unknown") == 1
    assert r.errors[("commit", "FencedError")] == 2
    assert r.faults == {"server kill -9": 2, "delete": 1}
    assert r.facts["acknowledged commits a delete removed later"] == 5
    assert r.facts["loads checked"] == 7


# --------------------------------------------------------------------------- (a) lost


def test_an_acknowledged_commit_missing_at_the_end_is_lost() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.commit("a", 4, 5, token=1, expected=1, cid="a-2", parent="a-1")
    only(check(h.ops, final(1, 1, (1, 1, "a-1"))), "lost")


def test_an_acknowledged_commit_off_the_final_chain_is_lost() -> None:
    # a-2 acked at 2; the run ends at 4 on a chain through x-2 (seen nowhere else): a-2 was replaced
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.commit("a", 4, 5, token=1, expected=1, cid="a-2", parent="a-1")
    h.commit("x", 6, None, token=1, expected=1, cid="x-2", parent="a-1", outcome="unknown", error="StoreUnavailableError")
    h.commit("x", 8, None, token=1, expected=2, cid="x-3", parent="x-2", outcome="unknown", error="StoreUnavailableError")
    h.commit("x", 10, None, token=1, expected=3, cid="x-4", parent="x-3", outcome="unknown", error="StoreUnavailableError")
    r = check(h.ops, final(4, 1, (4, 1, "x-4")))
    only(r, "lost")
    assert "a-2" in r.examples["lost"][0] and "x-2" in r.examples["lost"][0]


def test_an_acknowledged_commit_with_other_content_is_lost() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    f = final(1, 1, (1, 1, "a-1"))
    f[RUN]["kept"][0]["digest"] = "something else"
    only(check(h.ops, f), "lost")


def test_a_damaged_generation_at_the_end_is_reported_as_lost() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    f = final(1, 1, (1, 1, "a-1"))
    f[RUN]["damaged"] = ["kept generation 1 fails verification: checksum"]
    only(check(h.ops, f), "lost")


# --------------------------------------------------------------------------- (b) fork


def test_two_commits_acknowledged_at_one_generation_are_a_fork() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.acquire("b", 4, 5, token=2)
    h.commit("b", 6, 7, token=2, expected=0, cid="b-1", parent=None)  # the server forgot a-1?
    r = check(h.ops, final(1, 2, (1, 2, "b-1")))
    assert r.anomalies["fork"] >= 1, r.as_dict()
    assert any("a-1" in e and "b-1" in e for e in r.examples["fork"])


def test_a_load_and_an_ack_that_disagree_on_a_generation_are_a_fork() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.commit("b", 4, None, token=1, expected=0, cid="b-1", parent=None, outcome="unknown", error="DurabilityError")
    h.load("c", 8, 9, generation=1, cid="b-1", token=1)
    r = check(h.ops, final(1, 1, (1, 1, "a-1")))
    assert r.anomalies["fork"] >= 1 and r.anomalies["stale-read"] == 0, r.as_dict()


def test_a_commit_on_another_parent_than_the_generation_below_is_a_fork() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.commit("a", 4, 5, token=1, expected=1, cid="a-2", parent="a-1")
    h.acquire("b", 6, 7, token=2)
    h.commit("b", 8, 9, token=2, expected=2, cid="b-3", parent="zz")  # built on a state nobody saw at 2
    h.commit("zz", 1, None, token=1, expected=1, cid="zz", parent="a-1", outcome="unknown", error="StoreUnavailableError")
    only(check(h.ops, final(3, 2, (1, 1, "a-1"), (2, 1, "a-2"), (3, 2, "b-3"))), "fork")


def test_a_state_no_worker_committed_is_a_fork() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.load("a", 2, 3, generation=1, cid="ghost", token=1)
    only(check(h.ops, final(1, 1, (1, 1, "ghost"))), "fork")


# --------------------------------------------------------------------------- (c) stale


def test_a_lower_token_above_a_higher_one_in_the_chain_is_stale() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.acquire("b", 2, 3, token=2)
    h.commit("b", 4, 5, token=2, expected=0, cid="b-1", parent=None)
    h.commit("a", 6, 7, token=1, expected=1, cid="a-2", parent="b-1")  # a stale writer got in
    only(check(h.ops, final(2, 2, (1, 2, "b-1"), (2, 1, "a-2"))), "stale")


def test_a_commit_begun_after_a_newer_token_was_handed_out_must_not_succeed() -> None:
    # a's commit began after b's acquire completed: the fence was already above a's token
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.acquire("b", 4, 5, token=2, generation=1)
    h.commit("a", 6, 7, token=1, expected=1, cid="a-2", parent="a-1")
    only(check(h.ops, final(2, 2, (1, 1, "a-1"), (2, 1, "a-2"))), "stale")


def test_a_renew_after_a_takeover_must_not_succeed() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.acquire("b", 2, 3, token=2)
    h.op("a", "renew", 4, 5, args={"token": 1})
    only(check(h.ops, final(0, 2)), "stale")


# --------------------------------------------------------------------------- (d) token


def test_a_token_handed_out_twice_is_found() -> None:
    h = History()
    h.acquire("a", 0, 10, token=1)
    h.acquire("b", 5, 12, token=1)  # concurrent, same token: the fence lost an increment
    only(check(h.ops, final(0, 1)), "token")


def test_a_later_acquire_with_a_lower_token_is_found() -> None:
    h = History()
    h.acquire("a", 0, 1, token=5)
    h.acquire("b", 2, 3, token=4)  # after a server restart that lost fence increments
    only(check(h.ops, final(0, 5)), "token")


def test_tokens_after_a_delete_must_stay_above_its_fence() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.op("admin", "delete", 2, 3, args={"by": "n-1"}, fence=2, generations=0)
    h.acquire("b", 4, 5, token=2)  # the delete's tombstone fence handed out again
    only(check(h.ops, final(0, 2, deletes={"n-1": 2})), "token")


def test_a_fence_that_ends_below_a_token_handed_out_is_found() -> None:
    h = History()
    h.acquire("a", 0, 1, token=3)
    only(check(h.ops, final(0, 2)), "token")


# --------------------------------------------------------------------------- (e) written


def test_a_definitely_fenced_commit_that_a_later_load_sees_was_written() -> None:
    # the known bug of issue 11 #1: applied, reply lost, b took over, the resend said FencedError
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 30, token=1, expected=0, cid="a-1", parent=None, outcome="fail", error="FencedError")
    h.acquire("b", 3, 29, token=2, generation=1)
    h.load("b", 31, 32, generation=1, cid="a-1", token=1)
    r = check(h.ops, final(1, 2, (1, 1, "a-1")))
    only(r, "written")
    assert "FencedError" in r.examples["written"][0]


def test_a_conflicted_commit_found_in_the_final_state_was_written() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None, outcome="fail", error="ConflictError")
    only(check(h.ops, final(1, 1, (1, 1, "a-1"))), "written")


# --------------------------------------------------------------------------- (f) stale-read


def test_a_load_that_misses_an_earlier_acknowledged_commit_is_stale() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.commit("a", 4, 5, token=1, expected=1, cid="a-2", parent="a-1")
    h.load("b", 6, 7, generation=1, cid="a-1", token=1)
    only(check(h.ops, final(2, 1, (1, 1, "a-1"), (2, 1, "a-2"))), "stale-read")


def test_a_load_of_nothing_after_an_acknowledged_commit_is_stale() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.load("b", 6, 7)
    only(check(h.ops, final(1, 1, (1, 1, "a-1"))), "stale-read")


def test_a_load_that_fails_definitely_is_reported() -> None:
    h = History()
    h.op("b", "load", 0, 1, "fail", error="CorruptCheckpointError")
    only(check(h.ops, final(0, 0)), "stale-read")


def test_a_load_concurrent_with_a_delete_may_miss_what_it_deleted() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.op("admin", "delete", 4, 10, "unknown", args={"by": "n-1"}, error="StoreUnavailableError")
    h.load("b", 5, 6)  # the delete applied before this read (its event is in the audit stream)
    r = check(h.ops, final(0, 2, deletes={"n-1": 2}))
    assert r.ok, r.as_dict()
    assert r.facts["loads whose demand a delete removed"] == 1
    # ... but a load concurrent with a delete that never applied gets no excuse
    only(check(h.ops, final(1, 1, (1, 1, "a-1"))), "stale-read")


def test_a_load_that_sees_data_deleted_before_it_began_is_stale() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.op("admin", "delete", 4, 5, args={"by": "n-1"}, fence=2, generations=1)
    h.load("b", 6, 7, generation=1, cid="a-1", token=1)  # resurrected
    only(check(h.ops, final(0, 2, deletes={"n-1": 2})), "stale-read")


def test_a_load_concurrent_with_a_commit_may_or_may_not_see_it() -> None:
    h = History()
    h.acquire("a", 0, 1, token=1)
    h.commit("a", 2, 3, token=1, expected=0, cid="a-1", parent=None)
    h.commit("a", 4, 8, token=1, expected=1, cid="a-2", parent="a-1")
    h.load("b", 5, 6, generation=1, cid="a-1", token=1)
    h.load("c", 5, 9, generation=2, cid="a-2", token=1)
    assert check(h.ops, final(2, 1, (1, 1, "a-1"), (2, 1, "a-2"))).ok


# --------------------------------------------------------------------------- the log


def test_the_log_round_trips_and_an_operation_in_flight_is_unknown(tmp_path) -> None:
    path = tmp_path / "w0.0.jsonl"
    log = checker.HistoryLog(path, "w0.0")
    i = log.invoke("acquire", RUN, {"owner": "w0.0", "ttl_ms": 500})
    log.complete(i, "ok", {"token": 1, "generation": 0, "kind": "acquire"})
    log.invoke("commit", RUN, {"token": 1, "expected": 0, "cid": "w0.0-1", "parent": None, "digest": "x"})
    log.close()
    with open(path, "a") as fh:
        fh.write(json.dumps({"i": 2, "t": 1})[:7])  # the completion torn by a kill -9
    ops = checker.read_log(path)
    assert [(o.kind, o.outcome) for o in ops] == [("acquire", "ok"), ("commit", "unknown")]
    assert ops[0].process == "w0.0" and ops[0].result["token"] == 1 and ops[0].complete >= ops[0].invoke
    assert ops[1].complete is None and ops[1].args["cid"] == "w0.0-1"


def test_the_digest_tells_states_apart_and_is_stable() -> None:
    a = {"cid": "x", "pad": b"\x00\x01", "parent": None}
    assert checker.digest(a) == checker.digest(dict(reversed(list(a.items()))))
    assert checker.digest(a) != checker.digest({**a, "pad": b"\x00\x02"})
