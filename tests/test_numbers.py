"""Numbers stay exact: tokens, generations, ttls and times up to MAX_INT (2**50), a typed error
past it before anything is written. Lua 5.1 holds numbers as doubles and prints >= 1e14 as
``1e+14``; these tests put such numbers through every script on both servers."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from redis_ckpt import CheckpointError, CheckpointStore, FencedError, LeaseHeldError, OutOfRangeError
from redis_ckpt.core.codec import encode_state
from redis_ckpt.core.config import MAX_INT, MAX_TTL_MS
from redis_ckpt.core.frame import encode_frame
from redis_ckpt.core.keys import RunKeys

pytestmark = pytest.mark.server
BIG_GENERATION = 10**14 + 7  # past what Lua's tostring prints exactly


def frame_of(run: str, *, generation: int, token: int, state: object = "s") -> bytes:
    return encode_frame(encode_state(state), run_id=run, generation=generation, token=token, owner="w",
                        created_ms=1_700_000_000_000, schema_version=1)


def snapshot(client, store: CheckpointStore, run: str) -> dict:
    """Every key of the run with its value and TTL state (to show nothing was written)."""
    k = RunKeys(store.namespace, run)
    out = {}
    for key in sorted(client.scan_iter(match=f"{store.namespace}:*")):
        if key.decode() == k.events:
            out[key] = client.xlen(key)
            continue
        kind = client.type(key)
        value = client.hgetall(key) if kind == b"hash" else client.get(key)
        out[key] = (kind, value, client.pttl(key) > 0)
    return out


def test_the_bound_is_exact_in_lua_and_well_below_2_53():
    assert MAX_INT == 2**50 and MAX_TTL_MS == MAX_INT and float(MAX_INT) == MAX_INT


# ------------------------------------------------------------------------------------- tokens


def test_a_fence_past_the_bound_refuses_acquire_and_writes_nothing(store, client):
    """Main handed out the same (rounded) token twice with a fence at 2**62."""
    k = RunKeys(store.namespace, "huge")
    client.set(k.fence, 2**62)
    before = snapshot(client, store, "huge")
    with pytest.raises(OutOfRangeError) as e:
        store.acquire("huge", owner="a", ttl=10)
    assert isinstance(e.value, (CheckpointError, ValueError)) and e.value.argument == "fence"
    assert e.value.run_id == "huge" and e.value.maximum == MAX_INT
    assert snapshot(client, store, "huge") == before
    assert client.get(k.fence) == str(2**62).encode()
    # revoke and delete never refuse (they must fence every holder off) and stay exact
    assert store.revoke("huge") == 2**62 + 1
    store.delete("huge")
    assert client.get(k.fence) == str(2**62 + 2).encode()
    assert store.events("huge")[-1].fields["fence"] == str(2**62 + 2)


def test_tokens_next_to_the_bound_stay_distinct_and_stale_ones_are_fenced(store, client):
    k = RunKeys(store.namespace, "edge")
    client.set(k.fence, MAX_INT - 2)
    a = store.acquire("edge", owner="a", ttl=0.2)
    assert a.token == MAX_INT - 1
    assert a.commit({"by": "a"}) == 1
    store.revoke("edge")  # fence MAX_INT: a is fenced off
    with pytest.raises(FencedError) as e:
        a.commit({"by": "a", "stale": True})
    assert (e.value.token, e.value.fence) == (MAX_INT - 1, MAX_INT)
    with pytest.raises(OutOfRangeError):
        store.acquire("edge", owner="b", ttl=10)  # the next token would pass the bound
    assert client.get(k.fence) == str(MAX_INT).encode()
    assert store.info("edge").fence == MAX_INT
    assert store.load("edge").state == {"by": "a"} and store.load("edge").token == MAX_INT - 1


def test_a_commit_with_a_token_past_the_bound_is_refused_before_any_write(store, client):
    store.acquire("t", owner="a", ttl=10)
    before = snapshot(client, store, "t")
    for token in (MAX_INT + 1, 2**62):
        with pytest.raises(OutOfRangeError) as e:
            store.commit("t", {"x": 1}, token=token, expected_generation=0)
        assert e.value.argument == "token"
    with pytest.raises(OutOfRangeError):
        store.commit("t", {"x": 1}, token=1, expected_generation=MAX_INT)
    assert snapshot(client, store, "t") == before


# -------------------------------------------------------------------------------- generations


def test_an_imported_generation_past_1e14_reads_back_exactly_everywhere(store, client):
    """Main wrote it as 1e+14 and load/info/generations/delete raised a raw ValueError."""
    g = BIG_GENERATION
    assert store.import_frame(frame_of("big", generation=g, token=5, state={"n": 1})) == g
    ck = store.load("big")
    assert ck.generation == g and ck.head_generation == g and ck.state == {"n": 1}
    info = store.info("big")
    assert info.generation == g and info.kept == (g,) and info.fence == 6
    assert [x.generation for x in store.generations("big")] == [g]
    lease = store.acquire("big", owner="w", ttl=10)
    assert lease.generation == g and lease.token == 7
    assert lease.commit({"n": 2}) == g + 1
    assert lease.commit({"n": 3}) == g + 2
    assert store.info("big").kept == (g, g + 1, g + 2)
    assert [x.generation for x in store.generations("big")] == [g + 2, g + 1, g]
    assert lease.commit({"n": 4}) == g + 3
    k = RunKeys(store.namespace, "big")
    assert not client.exists(k.generation(g)) and client.exists(k.generation(g + 3))
    assert client.hget(k.head, "kept") == f"{g + 1},{g + 2},{g + 3}".encode()
    assert store.delete("big") == 3
    assert store.load("big") is None


def test_a_frame_past_the_bound_is_refused_by_import_before_any_write(store, client):
    k = RunKeys(store.namespace, "imp")
    client.set(k.fence, 3)
    before = snapshot(client, store, "imp")
    for generation, token, argument in ((MAX_INT + 1, 1, "generation"), (2**62, 1, "generation"),
                                        (5, MAX_INT, "token"), (5, 2**62, "token")):
        with pytest.raises(OutOfRangeError) as e:
            store.import_frame(frame_of("imp", generation=generation, token=token))
        assert e.value.argument == argument and e.value.run_id == "imp"
    assert snapshot(client, store, "imp") == before


def test_a_generation_at_the_bound_takes_no_commit_on_top(store, client):
    assert store.import_frame(frame_of("top", generation=MAX_INT, token=1)) == MAX_INT
    lease = store.acquire("top", owner="w", ttl=10)
    assert lease.generation == MAX_INT
    before = snapshot(client, store, "top")
    with pytest.raises(OutOfRangeError):
        lease.commit({"x": 1})
    assert snapshot(client, store, "top") == before
    assert store.load("top").generation == MAX_INT


# --------------------------------------------------------------------------------------- ttl

BAD_TTLS = [timedelta.max, math.inf, -math.inf, math.nan, 0, -1, 0.0, 1e20, 10**20, (MAX_TTL_MS + 1) / 1000,
            timedelta(0), timedelta(seconds=-5), True, "10"]


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
def test_an_out_of_range_ttl_is_refused_before_any_write(store, client, ttl):
    held = store.acquire("r", owner="holder", ttl=30)
    before = snapshot(client, store, "r")
    with pytest.raises(OutOfRangeError) as e:
        store.acquire("r", owner="holder", ttl=ttl)  # the same owner: it would re-acquire
    assert isinstance(e.value, CheckpointError) and isinstance(e.value, ValueError)
    assert e.value.argument == "ttl"
    with pytest.raises(OutOfRangeError):
        held.renew(ttl)
    assert snapshot(client, store, "r") == before
    info = store.info("r")
    assert info.fence == held.token and info.lease_owner == "holder" and 0 < info.lease_ms_left <= 30_000


def test_the_largest_ttl_is_kept_exactly_and_reported_in_whole_ms(store):
    """Main: another worker's acquire raised ValueError('8.64e+16') on a long lease."""
    long_ms = MAX_TTL_MS - 1000
    lease = store.acquire("long", owner="a", ttl=timedelta(milliseconds=long_ms))
    assert lease.ttl_ms == long_ms
    with pytest.raises(LeaseHeldError) as e:
        store.acquire("long", owner="b", ttl=10)
    assert long_ms - 60_000 < e.value.ms_left <= long_ms
    info = store.info("long")
    assert long_ms - 60_000 < info.lease_ms_left <= long_ms
    lease.renew(timedelta(milliseconds=MAX_TTL_MS))
    assert store.info("long").lease_ms_left > long_ms
    assert store.events("long")[-1].kind == "acquire"
    assert store.events("long")[-1].get_int("ttl_ms") == long_ms
