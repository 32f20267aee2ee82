"""Codec edges found in review: each test failed before its fix."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from redis_ckpt import CheckpointStore
from redis_ckpt.core.codec import decode_state, encode_state

# ---------------------------------------------------------------- Decimal text vs. the thread's context


def test_decimal_text_ignores_the_context_capitals() -> None:
    value = decimal.Decimal("1E+5")
    written = encode_state(value)
    with decimal.localcontext() as ctx:
        ctx.capitals = 0
        assert encode_state(value) == written  # "1E+5" either way: the text is canonical
        assert decode_state(written) == value
    out = decode_state(written)
    assert type(out) is decimal.Decimal and str(out) == "1E+5"


def test_decimal_written_lowercase_before_the_fix_still_decodes() -> None:
    # what the old encoder wrote under capitals=0: still the same value, loaded in any context
    written = encode_state(decimal.Decimal("1E+5")).replace(b"1E+5", b"1e+5")
    for capitals in (0, 1):
        with decimal.localcontext() as ctx:
            ctx.capitals = capitals
            out = decode_state(written)
        assert type(out) is decimal.Decimal and str(out) == "1E+5"
    with pytest.raises(ValueError):  # not a text either context writes
        decode_state(encode_state(decimal.Decimal("1E+5")).replace(b"1E+5", b"1E+05"))


@pytest.mark.parametrize("text", ["1E+5", "-0E-7", "1.00", "NaN", "-sNaN", "Infinity", "123456789012345678901234567890E-40"])
def test_decimal_round_trips_under_either_context(text: str) -> None:
    value = decimal.Decimal(text)
    for capitals in (0, 1):
        with decimal.localcontext() as ctx:
            ctx.capitals = capitals
            out = decode_state(encode_state(value))
        assert str(out) == str(value) and type(out) is decimal.Decimal


def test_decimal_written_under_lowercase_context_loads(store: CheckpointStore) -> None:
    with decimal.localcontext() as ctx:
        ctx.capitals = 0
        with store.acquire("dec", owner="w", ttl=30) as lease:
            lease.commit({"price": decimal.Decimal("1E+5")})
    ckpt = store.load("dec")
    assert ckpt.state == {"price": decimal.Decimal("1E+5")} and not ckpt.skipped


def test_decimal_written_normally_loads_under_lowercase_context(store: CheckpointStore) -> None:
    with store.acquire("dec2", owner="w", ttl=30) as lease:
        lease.commit({"price": decimal.Decimal("1E+5")})
    with decimal.localcontext() as ctx:
        ctx.capitals = 0
        ckpt = store.load("dec2")
    assert ckpt.state == {"price": decimal.Decimal("1E+5")} and not ckpt.skipped


# ---------------------------------------------------------------- forged manifests (checksum is unkeyed)


def _forged_shared_manifest(run_: object, gen_: object, head_: object, **over: object) -> bytes:
    import struct

    import msgpack
    import xxhash

    fields = {"run": run_, "gen": gen_, "size": 1, "head": head_, "digest": b"", "lengths": [], "avg": 1, **over}
    body = msgpack.packb(fields, use_bin_type=True)
    blob = struct.pack(">4sBI", b"RCKX", 1, 0) + struct.pack(">I", len(body)) + body
    return blob + xxhash.xxh3_128_digest(blob)


def _forged_plain_manifest(body: object) -> bytes:
    import struct

    import msgpack
    import xxhash

    packed = msgpack.packb(body, use_bin_type=True)
    head = struct.pack(">4sBI", b"RCKM", 1, len(packed)) + packed
    return head + xxhash.xxh3_128_digest(head)


def test_shared_manifest_int_head_is_bad_header_and_allocates_nothing_big() -> None:
    import tracemalloc

    from redis_ckpt.core import dedup
    from redis_ckpt.errors import FrameDamage, FrameError

    for head in (2**62, 64_000_000):  # bytes(n) of an int allocates n bytes
        blob = _forged_shared_manifest("r", 1, head)
        tracemalloc.start()
        try:
            with pytest.raises(FrameError) as info:
                dedup.read_manifest(blob, run_id="r", generation=1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert info.value.reason is FrameDamage.BAD_HEADER
        assert peak < 1_000_000, f"an {len(blob)}-byte manifest made the reader allocate {peak} bytes"


@pytest.mark.parametrize("over", [
    {"digest": 2**40}, {"run": 7}, {"run": b"r"}, {"gen": "1"}, {"gen": True}, {"gen": 1.0}, {"size": "1"},
    {"lengths": 5}, {"lengths": [1.0]}, {"lengths": [True]}, {"lengths": "1"}, {"avg": "1"}, {"avg": None},
])
def test_shared_manifest_fields_of_the_wrong_type_are_bad_header(over: dict) -> None:
    from redis_ckpt.core import dedup
    from redis_ckpt.errors import FrameDamage, FrameError

    blob = _forged_shared_manifest("r", 1, b"x", **over)
    with pytest.raises(FrameError) as info:
        dedup.read_manifest(blob, run_id="r", generation=1)
    assert info.value.reason is FrameDamage.BAD_HEADER


@pytest.mark.parametrize("body", [
    [1, 2], "run", {"run": "r", "gen": "1", "size": 1, "chunks": []}, {"run": b"r", "gen": 1, "size": 1, "chunks": []},
    {"run": "r", "gen": 1, "size": 1.0, "chunks": []}, {"run": "r", "gen": 1, "size": 1, "chunks": [True]},
    {"run": "r", "gen": 1, "size": 1, "chunks": (1).to_bytes(1, "big")}, {"run": "r", "gen": 1, "size": 1, "chunks": {1: 2}},
])
def test_plain_manifest_fields_of_the_wrong_type_are_bad_header(body: object) -> None:
    from redis_ckpt.core import chunks
    from redis_ckpt.errors import FrameDamage, FrameError

    with pytest.raises(FrameError) as info:
        chunks.read_manifest(_forged_plain_manifest(body), run_id="r", generation=1)
    assert info.value.reason is FrameDamage.BAD_HEADER


def test_well_formed_manifests_still_read() -> None:
    from redis_ckpt.core import chunks, dedup

    m = chunks.read_manifest(_forged_plain_manifest({"run": "r", "gen": 1, "size": 3, "chunks": [5, 2**64 - 1]}),
                             run_id="r", generation=1)
    assert m.chunk_sums == (5, 2**64 - 1) and m.size == 3
    s = dedup.read_manifest(_forged_shared_manifest("r", 1, b"hh", size=3, digest=b"d"), run_id="r", generation=1)
    assert s.head == b"hh" and s.digest == b"d" and s.lengths == () and s.avg == 1


def test_load_falls_back_past_forged_shared_manifest(store: CheckpointStore, client) -> None:
    with store.acquire("fm", owner="w", ttl=30) as lease:
        lease.commit({"n": 1})
        lease.commit({"n": 2})
    key = [k for k in client.keys("*{fm}:g:2")][0]
    client.set(key, _forged_shared_manifest("fm", 2, 2**62))
    ckpt = store.load("fm")
    assert ckpt.generation == 1 and ckpt.skipped and ckpt.state == {"n": 1}


# ---------------------------------------------------------------- depth of spliced values: where they are stored


def _nest(levels: int) -> object:
    value: object = 0
    for _ in range(levels):
        value = [value]
    return value


def _nest_dicts(levels: int) -> object:  # through the careful path (a tuple at the bottom)
    value: object = (1,)
    for _ in range(levels - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize("nest", [_nest, _nest_dicts])
def test_encoded_value_is_bounded_where_it_sits(nest) -> None:
    from redis_ckpt import encoded
    from redis_ckpt.core.codec import MAX_DEPTH
    from redis_ckpt.errors import UnsupportedTypeError

    # spliced under a key of the top-level dict, it sits one level down: as deep as a plain value there
    encode_state({"a": nest(MAX_DEPTH - 1)})
    data = encode_state({"a": encoded(nest(MAX_DEPTH - 1))})
    assert decode_state(data, max_depth=MAX_DEPTH) == {"a": nest(MAX_DEPTH - 1)}
    with pytest.raises(UnsupportedTypeError):
        encode_state({"a": nest(MAX_DEPTH)})
    with pytest.raises(UnsupportedTypeError):
        encoded(nest(MAX_DEPTH))  # was accepted: its state then failed import's depth check


@pytest.mark.parametrize("nest", [_nest, _nest_dicts])
def test_plain_value_beside_an_encoded_one_is_bounded_where_it_sits(nest) -> None:
    from redis_ckpt import encoded
    from redis_ckpt.core.codec import MAX_DEPTH
    from redis_ckpt.errors import UnsupportedTypeError

    data = encode_state({"e": encoded(1), "v": nest(MAX_DEPTH - 1)})
    assert decode_state(data, max_depth=MAX_DEPTH) == {"e": 1, "v": nest(MAX_DEPTH - 1)}
    with pytest.raises(UnsupportedTypeError) as info:
        encode_state({"e": encoded(1), "v": nest(MAX_DEPTH)})
    assert info.value.path.startswith("state['v']")


@pytest.mark.parametrize("nest", [_nest, _nest_dicts])
def test_encoded_map_and_list_items_are_bounded_where_they_sit(nest) -> None:
    from redis_ckpt import EncodedList, EncodedMap
    from redis_ckpt.core.codec import MAX_DEPTH
    from redis_ckpt.errors import UnsupportedTypeError

    m, items = EncodedMap(), EncodedList()
    m.add("k", nest(MAX_DEPTH - 2))  # the map sits at depth 1, its values at depth 2
    items.add(nest(MAX_DEPTH - 2))
    data = encode_state({"m": m.encoded(), "l": items.encoded()})
    assert decode_state(data, max_depth=MAX_DEPTH) == {"m": {"k": nest(MAX_DEPTH - 2)}, "l": [nest(MAX_DEPTH - 2)]}
    with pytest.raises(UnsupportedTypeError):
        m.add("deeper", nest(MAX_DEPTH - 1))
    with pytest.raises(UnsupportedTypeError):
        items.add(nest(MAX_DEPTH - 1))
    assert len(m) == 1 and len(items) == 1


def test_spliced_state_at_depth_limit_can_be_forked(store: CheckpointStore) -> None:
    from redis_ckpt import encoded
    from redis_ckpt.core.codec import MAX_DEPTH
    from redis_ckpt.errors import UnsupportedTypeError

    with store.acquire("deep", owner="w", ttl=30) as lease:
        lease.commit({"a": encoded(_nest(MAX_DEPTH - 1))}, metadata={"m": encoded(_nest(MAX_DEPTH - 1))})
        with pytest.raises(UnsupportedTypeError):
            lease.commit({"a": encoded(1), "b": _nest(MAX_DEPTH)})
        with pytest.raises(UnsupportedTypeError):
            lease.commit({"x": 1}, metadata={"e": encoded(1), "m": _nest(MAX_DEPTH)})
    store.fork("deep", "deep-copy")  # was refused: "containers nested more than 128 levels deep"
    ckpt = store.load("deep-copy")
    assert ckpt.state == {"a": _nest(MAX_DEPTH - 1)} and ckpt.metadata["m"] == _nest(MAX_DEPTH - 1)


# ---------------------------------------------------------------- an object's own dict (Python 3.13+: values inline)


class _Job:
    pass


_ALIVE: list[_Job] = []  # an instance dict keeps its values inline only while its object lives


def _job_dict(**attrs: object) -> dict:
    job = _Job()
    for name, value in attrs.items():
        setattr(job, name, value)
    _ALIVE.append(job)
    return vars(job)  # on 3.13+ its values live in the object: gc.get_referents(it) == []


@pytest.fixture(params=["native", "simulated"])
def hidden_values(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """'native': this Python's own get_referents (hides an instance dict's values from 3.13 on);
    'simulated': on any Python, a get_referents that hides them as 3.13's does."""
    import gc
    import types

    from redis_ckpt.core.codec import plain

    if request.param == "native":
        return
    real = gc.get_referents

    def get_referents(*objs: object) -> list:
        return real(*(o for o in objs if not (type(o) is dict and "_hidden" in o)))

    monkeypatch.setattr(plain, "gc", types.SimpleNamespace(get_referents=get_referents))
    monkeypatch.setattr(plain, "_INLINE_VALUES", True, raising=False)


def _hide(d: dict) -> dict:
    d["_hidden"] = 1  # what the simulated get_referents hides (harmless for the native one)
    return d


@pytest.mark.usefixtures("hidden_values")
@pytest.mark.parametrize("where", ["root", "in list", "in dict", "beside scalars"])
def test_instance_dict_keeps_bytearray(where: str) -> None:
    d = _hide(_job_dict(buf=bytearray(b"abc")))
    state = {"root": d, "in list": [d, d], "in dict": {"job": d}, "beside scalars": [1, "x", d, {1: 2}]}[where]
    out = decode_state(encode_state(state))
    assert out == state
    found = out if where == "root" else out[0] if where == "in list" else out["job"] if where == "in dict" else out[2]
    assert type(found["buf"]) is bytearray


@pytest.mark.usefixtures("hidden_values")
def test_instance_dict_depth_is_bounded() -> None:
    from redis_ckpt.core.codec import MAX_DEPTH
    from redis_ckpt.errors import UnsupportedTypeError

    with pytest.raises(UnsupportedTypeError):
        encode_state(_hide(_job_dict(deep=_nest(MAX_DEPTH + 50))))
    with pytest.raises(UnsupportedTypeError):
        encode_state([_hide(_job_dict(deep=_nest(MAX_DEPTH - 1)))])
    state = _hide(_job_dict(deep=_nest(MAX_DEPTH - 1)))
    assert decode_state(encode_state(state)) == state


# ---------------------------------------------------------------- a timezone name that is not valid UTF-8


@pytest.mark.parametrize("make", [
    lambda tz: dt.datetime(2020, 1, 1, tzinfo=tz), lambda tz: dt.time(1, 2, tzinfo=tz),
])
def test_timezone_name_with_lone_surrogate_is_refused_at_its_path(make) -> None:
    from redis_ckpt.errors import UnsupportedTypeError

    tz = dt.timezone(dt.timedelta(hours=1), "ok\ud800")
    for state, path in (({"a": [1, make(tz)]}, "state['a'][1]"), (make(tz), "state"),
                        ({"k": {(1, make(tz)): 2}}, "state['k'][<key (1, ")):
        with pytest.raises(UnsupportedTypeError) as info:
            encode_state(state)
        assert info.value.path.startswith(path)
        assert "timezone name" in str(info.value) and "UTF-8" in str(info.value)
    named = dt.timezone(dt.timedelta(hours=1), "ok")
    assert decode_state(encode_state({"a": [make(named)]})) == {"a": [make(named)]}


# ---------------------------------------------------------------- too large, with Encoded values


@pytest.mark.parametrize("b", ["y" * 30, ["y" * 30], {"t": ("y" * 30,)}])
def test_spliced_state_too_large_names_the_real_limit(b: object) -> None:
    from redis_ckpt import encoded
    from redis_ckpt.errors import StateTooLargeError

    a = encoded(b"x" * 80)
    with pytest.raises(StateTooLargeError) as info:
        encode_state({"a": a, "b": b}, limit=100)
    assert info.value.limit == 100, str(info.value)  # was 13: what was left for state['b']
    assert info.value.size > 100 and info.value.size >= len(a) + 30
    assert "limit of 100" in str(info.value) and str(info.value).startswith("state ")
    assert len(encode_state({"a": a, "b": b})) <= 150  # the size reported is a lower bound
