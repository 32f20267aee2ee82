"""A write sent again after its connection broke: never a false rejection.

A loopback proxy (tests/tcp_proxy.py) sits between worker A and the server. It forwards A's
commit, lets the server run it and swallows the reply (or swallows the request itself);
meanwhile a second worker acts on the run; then the proxy cuts the connection and A's store
sends the commit again with the same commit id. The resend must return the generation the
first attempt made when that attempt applied, a definite FencedError/ConflictError only when
the server can show it did not apply, and OutcomeUnknownError when it cannot tell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from redis_ckpt import (
    CheckpointStore,
    ConflictError,
    FencedError,
    OutcomeUnknownError,
    StoreUnavailableError,
)
from redis_ckpt.drivers.scripts import SCRIPTS
from tcp_proxy import CutProxy

pytestmark = pytest.mark.server
COMMIT = SCRIPTS.sha("commit").encode()


@pytest.fixture
def proxy(durable_server) -> Iterator[CutProxy]:
    with CutProxy(durable_server.port) as p:
        yield p


@pytest.fixture
def worker_a(proxy, namespace) -> Iterator[CheckpointStore]:
    """Worker A's store: every byte goes through the proxy."""
    import redis

    store = CheckpointStore(redis.Redis(port=proxy.port, socket_timeout=30), namespace=namespace, keep=3)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def worker_b(client, namespace) -> CheckpointStore:
    return CheckpointStore(client, namespace=namespace, keep=3)


class Background:
    """Run ``fn`` on a thread; ``result()`` is its return value or its exception."""

    def __init__(self, fn: Any) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Any) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def result(self) -> Any:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the write never returned"
        if self.error is not None:
            raise self.error
        return self.value


def wait_lease_gone(store: CheckpointStore, run: str) -> None:
    deadline = time.monotonic() + 10
    while store.info(run).lease_ms_left is not None:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.02)


def lose_reply_then(proxy: CutProxy, write: Any, meanwhile: Any, rule: str = "lose-reply") -> Background:
    """Start ``write`` through the proxy, lose its reply (or request), run ``meanwhile``, cut."""
    proxy.arm(rule, COMMIT)
    bg = Background(write)
    assert proxy.answered.wait(20), "the commit never reached the proxy"
    meanwhile()
    proxy.cut()
    return bg


def first_commit(store: CheckpointStore, run: str, ttl: float = 0.3) -> Any:
    lease = store.acquire(run, owner="a", ttl=ttl)
    assert lease.commit({"step": 1}) == 1  # also loads the script: NOSCRIPT is not the fault we mean
    return lease


def test_a_resend_of_an_applied_commit_after_a_takeover_returns_its_generation(proxy, worker_a, worker_b):
    """The field report: applied, reply lost, another worker took over, connection cut."""
    lease = first_commit(worker_a, "job")
    grants = []

    def takeover() -> None:
        wait_lease_gone(worker_b, "job")
        grants.append(worker_b.acquire("job", owner="b", ttl=30))

    bg = lose_reply_then(proxy, lambda: lease.commit({"step": 2}), takeover)
    assert bg.result() == 2  # not FencedError: the commit is the run's head
    b = grants[0]
    assert b.kind == "takeover" and b.token > lease.token and b.generation == 2
    ck = worker_b.load("job")
    assert ck.generation == 2 and ck.state == {"step": 2} and ck.owner == "a"
    kinds = [e.kind for e in worker_b.events("job")]
    # the head's creation is the one commit event (later commits live in the head); the resend
    # was recognised as applied, never refused
    assert kinds.count("commit") == 1 and "commit_retry" in kinds and "fenced" not in kinds


def test_a_resend_returns_its_generation_while_newer_ones_sit_on_top(proxy, worker_a, worker_b):
    lease = first_commit(worker_a, "job")

    def takeover_and_commit() -> None:
        wait_lease_gone(worker_b, "job")
        b = worker_b.acquire("job", owner="b", ttl=30)
        assert b.generation == 2
        assert b.commit({"step": 3}) == 3 and b.commit({"step": 4}) == 4  # keep=3: g2 is still kept

    bg = lose_reply_then(proxy, lambda: lease.commit({"step": 2}), takeover_and_commit)
    assert bg.result() == 2
    assert [g.generation for g in worker_b.generations("job")] == [4, 3, 2]
    assert worker_b.load("job").state == {"step": 4}


def test_a_resend_whose_generation_rotated_out_is_outcome_unknown(proxy, worker_a, worker_b):
    lease = first_commit(worker_a, "job")

    def takeover_and_rotate() -> None:
        wait_lease_gone(worker_b, "job")
        b = worker_b.acquire("job", owner="b", ttl=30)
        for step in (3, 4, 5):
            b.commit({"step": step})  # g2 (A's) rotates out of keep=3

    bg = lose_reply_then(proxy, lambda: lease.commit({"step": 2}), takeover_and_rotate)
    with pytest.raises(OutcomeUnknownError) as e:
        bg.result()
    err = e.value
    assert err.outcome_unknown is True and isinstance(err, StoreUnavailableError)
    assert not isinstance(err, (FencedError, ConflictError))
    assert err.refused == "FENCED" and err.token == lease.token and err.fence > lease.token
    assert err.expected == 1 and err.actual == 5 and err.run_id == "job"


def test_a_resend_after_the_run_was_deleted_is_outcome_unknown(proxy, worker_a, worker_b):
    lease = first_commit(worker_a, "job")

    def delete_and_recreate() -> None:
        worker_b.delete("job")
        b = worker_b.acquire("job", owner="b", ttl=30)
        b.commit({"step": "new-1"})
        b.commit({"step": "new-2"})  # a new run reaches generation 2 again, with another commit id

    bg = lose_reply_then(proxy, lambda: lease.commit({"step": 2}), delete_and_recreate)
    with pytest.raises(OutcomeUnknownError):
        bg.result()


def test_a_resend_of_a_commit_that_never_arrived_is_fenced(proxy, worker_a, worker_b):
    lease = first_commit(worker_a, "job")

    def takeover_and_commit() -> None:
        wait_lease_gone(worker_b, "job")
        b = worker_b.acquire("job", owner="b", ttl=30)
        assert b.generation == 1
        assert b.commit({"step": "b"}) == 2  # generation 2 is B's: A's cannot have applied

    bg = lose_reply_then(proxy, lambda: lease.commit({"step": 2}), takeover_and_commit, rule="lose-request")
    with pytest.raises(FencedError) as e:
        bg.result()
    assert (e.value.token, e.value.fence) == (lease.token, lease.token + 1)
    assert worker_b.load("job").state == {"step": "b"}


def test_a_resend_that_never_arrived_is_fenced_when_the_head_did_not_move(proxy, worker_a, worker_b):
    lease = first_commit(worker_a, "job")

    def takeover() -> None:
        wait_lease_gone(worker_b, "job")
        worker_b.acquire("job", owner="b", ttl=30)

    bg = lose_reply_then(proxy, lambda: lease.commit({"step": 2}), takeover, rule="lose-request")
    with pytest.raises(FencedError):
        bg.result()
    assert worker_b.info("job").generation == 1


def test_a_resend_that_lost_the_race_to_the_same_token_is_a_conflict(proxy, worker_a, worker_b):
    lease = first_commit(worker_a, "job", ttl=30)

    def same_token_writer() -> None:
        assert worker_b.commit("job", {"step": "twin"}, token=lease.token, expected_generation=1) == 2

    bg = lose_reply_then(proxy, lambda: lease.commit({"step": 2}), same_token_writer, rule="lose-request")
    with pytest.raises(ConflictError) as e:
        bg.result()
    assert (e.value.expected, e.value.actual) == (1, 2)


def test_a_resend_of_an_applied_import_returns_its_generation(proxy, worker_a, worker_b):
    lease = worker_b.acquire("src", owner="b", ttl=30)
    for i in range(3):
        lease.commit({"i": i})
    frame = worker_b.export_frame("src")
    worker_b.delete("src")
    first_commit(worker_a, "warm-up")  # loads the script through the proxy

    def commit_on_top() -> None:
        b = worker_b.acquire("src", owner="b2", ttl=30)
        assert b.generation == 3
        assert b.commit({"i": "on top"}) == 4

    bg = lose_reply_then(proxy, lambda: worker_a.import_frame(frame), commit_on_top)
    assert bg.result() == 3  # not ConflictError: the import applied
    assert [g.generation for g in worker_b.generations("src")] == [4, 3]
    assert worker_b.load("src").state == {"i": "on top"}


def test_an_import_sent_twice_returns_the_same_generation(worker_b):
    lease = worker_b.acquire("src", owner="b", ttl=30)
    lease.commit({"i": 0})
    frame = worker_b.export_frame("src")
    worker_b.delete("src")
    assert worker_b.import_frame(frame) == 1
    assert worker_b.import_frame(frame) == 1
    kinds = [e.kind for e in worker_b.events("src")]
    assert kinds.count("import") == 1


def test_the_async_store_recognises_its_resend_too(proxy, worker_b, namespace):
    import asyncio

    import redis.asyncio

    from redis_ckpt.aio import AsyncCheckpointStore

    async def scenario() -> None:
        a = await AsyncCheckpointStore.create(redis.asyncio.Redis(port=proxy.port), namespace=namespace, keep=3)
        try:
            lease = await a.acquire("job", owner="a", ttl=0.3)
            assert await lease.commit({"step": 1}) == 1
            proxy.arm("lose-reply", COMMIT)
            pending = asyncio.ensure_future(lease.commit({"step": 2}))
            while not proxy.answered.is_set():
                await asyncio.sleep(0.01)
            await asyncio.to_thread(wait_lease_gone, worker_b, "job")
            b = await asyncio.to_thread(worker_b.acquire, "job", owner="b", ttl=30)
            assert b.generation == 2
            proxy.cut()
            assert await asyncio.wait_for(pending, 60) == 2
        finally:
            await a.close()

    asyncio.run(scenario())


def test_a_delete_resent_after_its_reply_was_lost_reports_what_it_deleted(proxy, worker_a, worker_b):
    """The first attempt applies and its reply is lost; the resend finds its own audit event
    and answers as the first attempt did: the generations this call deleted, the fence bumped
    once, one delete event (it used to delete nothing more and say 0, bump the fence again and
    write a second event)."""
    lease = first_commit(worker_a, "job", ttl=30)
    lease.commit({"step": 2})
    lease.commit({"step": 3})
    worker_a.delete("warm", by="ops")  # delete.lua cached on the server
    fence = worker_b.info("job").fence
    proxy.arm("lose-reply", SCRIPTS.sha("delete").encode())
    bg = Background(lambda: worker_a.delete("job", by="ops"))
    assert proxy.answered.wait(20), "the delete never reached the server"
    proxy.cut()
    assert bg.result() == 3
    assert worker_b.info("job").fence == fence + 1
    assert [e.kind for e in worker_b.events("job")].count("delete") == 1
    assert worker_b.delete("job", by="ops") == 0  # another call: nothing more to delete


def _damage(client: Any, key: str) -> None:
    client.setrange(key, client.strlen(key) - 24, b"\xff\xff")  # inside the payload: the checksum fails


@pytest.mark.parametrize("what", ["load", "fork"])
def test_an_audit_event_resent_after_its_reply_was_lost_is_written_once(proxy, worker_a, worker_b, client,
                                                                         namespace, what):
    """A load that fell back past a damaged generation, and a fork, each write an audit event
    (``fallback``, ``forked``); when that XADD's reply was lost, the resend wrote it again: two
    events for one call. The resend finds its event by id and writes nothing."""
    from redis_ckpt.core.keys import RunKeys

    lease = first_commit(worker_a, "job", ttl=30)
    lease.commit({"step": 2})
    lease.release()
    kind = "fallback" if what == "load" else "forked"
    if what == "load":
        _damage(client, RunKeys(namespace, "job").generation(2))
        call = lambda: worker_a.load("job").generation  # noqa: E731
    else:
        call = lambda: worker_a.fork("job", "job-2", by="ops")  # noqa: E731
    proxy.arm("lose-reply", f"${len(kind)}\r\n{kind}\r\n".encode())
    bg = Background(call)
    assert proxy.answered.wait(20), f"the {kind} event never reached the server"
    proxy.cut()
    assert bg.result() == 1
    assert [e.kind for e in worker_b.events("job")].count(kind) == 1
