"""Values encoded once and joined verbatim into a state (core/codec/spliced.py): the bytes are
exactly those of encoding the plain state, so it reads back with its exact types; an Encoded
anywhere but a top-level dict's value is refused, and the size limit holds."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_codec import FAST, assert_same, values

from redis_ckpt.core.codec import Encoded, EncodedList, EncodedMap, decode_state, encode_state, encode_state_buffer, encoded
from redis_ckpt.errors import StateTooLargeError, UnsupportedTypeError


def spliced(plain: dict, as_map: set[str], as_value: set[str]) -> dict:
    out = {}
    for key, value in plain.items():
        if key in as_map:
            m = EncodedMap()
            for k, v in value.items():
                m.add(k, v, root=f"state[{key!r}]")
            out[key] = m.encoded()
        elif key in as_value:
            out[key] = encoded(value)
        else:
            out[key] = value
    return out


@FAST
@given(st.dictionaries(st.text(max_size=6), values, max_size=5),
       st.dictionaries(st.text(max_size=6), st.dictionaries(st.text(max_size=6), values, max_size=20), max_size=3),
       st.data())
def test_a_spliced_state_is_the_plain_state_byte_for_byte(top, maps, data):
    plain = {**top, **{f"m{k}": v for k, v in maps.items()}}
    as_map = {f"m{k}" for k in maps}
    as_value = set(data.draw(st.sets(st.sampled_from(sorted(top)), max_size=len(top)))) if top else set()
    state = spliced(plain, as_map, as_value)
    if not as_map and not as_value:
        return
    assert encode_state(state) == encode_state(plain)
    assert bytes(encode_state_buffer(state)) == encode_state(plain)
    assert_same(decode_state(encode_state(state)), plain)


def test_a_map_grows_one_entry_at_a_time_and_keeps_every_header_size():
    m, plain = EncodedMap(), {}
    stamp = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    for i in range(70_000):  # fixmap, map16, map32
        value = {"i": i, "at": stamp, "d": Decimal("1.5"), "t": (i,)} if i % 1000 == 0 else i
        m.add(f"s{i}", value)
        plain[f"s{i}"] = value
        if i in (14, 15, 65_534, 65_535):
            assert encode_state({"r": m.encoded()}) == encode_state({"r": plain})
    assert len(m) == 70_000 and "s5" in m
    back = decode_state(encode_state({"kind": "x", "r": m.encoded()}))
    assert_same(back, {"kind": "x", "r": plain})


def test_an_encoded_value_is_refused_anywhere_but_a_top_level_value():
    e = encoded([1, 2])
    for state, path in (([e], "state[0]"), ({"a": {"b": e}}, "state['a']['b']"), (e, "state")):
        with pytest.raises(UnsupportedTypeError) as err:
            encode_state(state)
        assert err.value.path == path and err.value.type_name == "redis_ckpt.Encoded"
        assert "directly under a key of the top-level dict" in str(err.value)  # says where it may go
    with pytest.raises(UnsupportedTypeError):
        encode_state({1: e})  # keys of a state holding Encoded values are str only


@pytest.mark.parametrize("kind", [EncodedList, EncodedMap])
def test_a_growing_list_or_map_put_in_a_state_whole_says_to_take_its_encoding(kind):
    grown = kind()
    for state, path in (({"history": grown}, "state['history']"), ({"a": [grown]}, "state['a'][0]")):
        with pytest.raises(UnsupportedTypeError) as err:
            encode_state(state)
        assert err.value.path == path and err.value.type_name == f"redis_ckpt.{kind.__name__}"
        assert "put its .encoded() in the state" in str(err.value)


def test_only_the_codec_makes_an_encoded_value():
    with pytest.raises(TypeError):
        Encoded((b"\xc1",), 1)  # bytes that are no value at all
    with pytest.raises(UnsupportedTypeError) as err:
        encoded({"x": object()}, root="inputs")
    assert err.value.path == "inputs['x']"
    m = EncodedMap()
    with pytest.raises(UnsupportedTypeError) as err:
        m.add("a", [bytearray(b"ok"), memoryview(b"no")], root="results")
    assert err.value.path == "results['a'][1]" and len(m) == 0
    m.add("a", 1)
    with pytest.raises(ValueError):
        m.add("a", 2)  # a key twice would decode to one entry under a header counting two
    with pytest.raises(UnsupportedTypeError):
        m.add(("t",), 1)  # type: ignore[arg-type]
    assert decode_state(encode_state({"m": m.encoded()})) == {"m": {"a": 1}}


def test_the_size_limit_counts_the_encoded_parts():
    m = EncodedMap()
    m.add("big", b"x" * 10_000)
    state = {"r": m.encoded(), "s": "y" * 10}
    size = len(encode_state(state))
    assert len(encode_state(state, limit=size)) == size
    with pytest.raises(StateTooLargeError):
        encode_state(state, limit=size - 1)
    with pytest.raises(StateTooLargeError):
        encode_state({"r": m.encoded(), "s": "y" * 20_000}, limit=15_000)  # refused before the str is packed


@FAST
@given(st.lists(values, max_size=40), st.integers(0, 20))
def test_a_list_grows_one_item_at_a_time(items, extra):
    grown = EncodedList(items, root="completed")
    plain = list(items)
    for i in range(extra):
        grown.add(i)
        plain.append(i)
    assert encode_state({"c": grown.encoded(), "x": 1}) == encode_state({"c": plain, "x": 1})
    assert_same(decode_state(encode_state({"c": grown.encoded()}))["c"], plain)


def test_a_list_over_every_header_size_and_a_refused_item_named():
    grown = EncodedList(range(70_000))
    assert encode_state({"c": grown.encoded()}) == encode_state({"c": list(range(70_000))})
    with pytest.raises(UnsupportedTypeError) as err:
        grown.add(object(), root="completed")
    assert err.value.path == "completed[70000]" and len(grown) == 70_000


def test_a_key_that_is_no_valid_utf8_is_refused_naming_it():
    with pytest.raises(UnsupportedTypeError) as err:
        encode_state({"ok": encoded(1), "bad\udc80": 2})
    assert "bad" in err.value.path


@pytest.mark.parametrize("kind", ["list", "map"])
def test_an_encoding_taken_while_another_thread_adds_is_never_torn(kind):
    """Its header counts exactly the items it holds: a commit racing an append stores the
    history with or without the new item, never bytes that decode to something else."""
    import sys
    import threading

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    torn = taken = 0
    try:
        for _ in range(40):
            grown = EncodedList() if kind == "list" else EncodedMap()

            def add(grown=grown) -> None:
                for i in range(2000):
                    grown.add(i) if kind == "list" else grown.add(f"k{i}", i)

            writer = threading.Thread(target=add)
            writer.start()
            while writer.is_alive():
                taken += 1
                try:
                    back = decode_state(encode_state({"h": grown.encoded(), "z": 1}))
                except Exception:  # noqa: BLE001 - a torn encoding may not decode at all
                    torn += 1
                    continue
                n = len(back.get("h", ()))
                expected = list(range(n)) if kind == "list" else {f"k{i}": i for i in range(n)}
                torn += back != {"h": expected, "z": 1}
            writer.join()
    finally:
        sys.setswitchinterval(interval)
    assert taken > 40 and torn == 0


def test_a_growing_list_and_map_copy_and_pickle_as_plain_data():
    import copy
    import pickle

    grown, m = EncodedList([1, (2, 3)]), EncodedMap()
    m.add("a", {"b": 1})
    for make in (copy.deepcopy, lambda x: pickle.loads(pickle.dumps(x))):
        g2, m2 = make(grown), make(m)
        g2.add(4)
        assert decode_state(encode_state({"g": g2.encoded(), "m": m2.encoded()})) == {"g": [1, (2, 3), 4],
                                                                                      "m": {"a": {"b": 1}}}
        assert len(grown) == 2  # the copy grew, not the original
