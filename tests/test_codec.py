"""The exact-type codec: every supported type round-trips exactly, everything else is
refused at encode time naming its path, and no byte string crashes the decoder."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import math
import os
import struct
import threading
import time
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any, NamedTuple

import msgpack
import ormsgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_ckpt.core.codec import MAX_DEPTH, decode_state, encode_state, encode_state_buffer
from redis_ckpt.errors import StateError, StateTooLargeError, UnsupportedTypeError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def round_trip(value: object) -> object:
    return decode_state(encode_state(value))


# ---------------------------------------------------------------- exact comparison


def assert_same_tz(a: dt.tzinfo | None, b: dt.tzinfo | None) -> None:
    assert type(a) is type(b), (a, b)
    if type(a) is dt.timezone:
        assert a.__getinitargs__() == b.__getinitargs__(), (a, b)  # offset and explicit name
    elif type(a) is zoneinfo.ZoneInfo:
        assert a.key == b.key, (a, b)


def assert_same(a: Any, b: Any) -> None:
    """Same type and same value, all the way down (NaN equals NaN, Decimal compared by str)."""
    assert type(a) is type(b), f"{type(a).__name__} {a!r} came back as {type(b).__name__} {b!r}"
    kind = type(a)
    if kind is float:
        assert struct.pack(">d", a) == struct.pack(">d", b), (a, b)  # bit-exact: -0.0, NaN
    elif kind is Decimal:
        assert str(a) == str(b), (a, b)
    elif kind in (list, tuple):
        assert len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif kind is dict:
        assert len(a) == len(b), (a, b)
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):  # insertion order is kept too
            assert_same(ka, kb)
            assert_same(va, vb)
    elif kind in (set, frozenset):
        assert len(a) == len(b), (a, b)
        members_of_b = {m: m for m in b}
        for m in a:
            assert m in members_of_b, (m, b)
            assert_same(m, members_of_b[m])
    elif kind in (dt.datetime, dt.time):
        fields = ("hour", "minute", "second", "microsecond", "fold")
        if kind is dt.datetime:
            fields = ("year", "month", "day", *fields)
        assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields], (a, b)
        assert_same_tz(a.tzinfo, b.tzinfo)
    else:
        assert a == b, (a, b)


# ---------------------------------------------------------------- strategies

offsets = st.timedeltas(min_value=dt.timedelta(hours=-24) + dt.timedelta(microseconds=1),
                        max_value=dt.timedelta(hours=24) - dt.timedelta(microseconds=1))
fixed_zones = st.one_of(
    st.just(dt.timezone.utc),
    st.builds(dt.timezone, offsets),
    st.builds(dt.timezone, offsets, st.text(max_size=8)),
)
zones = st.one_of(fixed_zones, st.timezones())
aware_or_naive = st.one_of(st.none(), zones)
datetimes = st.builds(
    lambda d, fold: d.replace(fold=fold),
    st.datetimes(timezones=aware_or_naive, allow_imaginary=True), st.integers(0, 1),
)
times = st.builds(lambda t, fold: t.replace(fold=fold), st.times(timezones=aware_or_naive), st.integers(0, 1))
huge_ints = st.integers(min_value=2**64, max_value=2**300) | st.integers(min_value=-(2**300), max_value=-(2**63) - 1)


def scalars(*, nan: bool) -> st.SearchStrategy:
    return st.one_of(
        st.none(), st.booleans(), st.integers(), huge_ints, st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1]),
        st.floats(allow_nan=nan), st.just(-0.0), st.text(), st.binary(),
        datetimes, st.dates(), times, st.timedeltas(), st.uuids(),
        st.decimals(allow_nan=nan),
        st.sampled_from([Decimal("-0"), Decimal("1E+5"), Decimal("0E-12"), Decimal("-Infinity")]),
        st.sampled_from([Decimal("sNaN"), Decimal("-NaN12")]) if nan else st.nothing(),
    )


hashables = st.recursive(
    scalars(nan=False),
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
values = st.recursive(
    scalars(nan=True) | st.binary().map(bytearray),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(hashables, inner, max_size=5),
        st.sets(hashables, max_size=5),
        st.frozensets(hashables, max_size=5),
    ),
    max_leaves=25,
)


@FAST
@given(values)
def test_every_supported_value_round_trips_exactly(value: object) -> None:
    assert_same(value, round_trip(value))


# ---------------------------------------------------------------- named examples

EXAMPLES = {
    "big ints": [2**64, -(2**63) - 1, 2**1000, -(2**1000), 2**63 - 1, -(2**63), 2**64 - 1],
    "floats": [math.nan, -math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308],
    "bytes kinds": [b"", bytearray(), bytearray(b"\x00\xff"), (bytearray(b"in a tuple"),), {"k": bytearray(b"v")}],
    "bytearray alone": bytearray(b"top"),
    "nested bytearray copies": [[(1, [bytearray(b"x")])], {"a": {"b": (bytearray(b"y"),)}}],
    "keys": {1: "int", (1, "a"): "tuple", frozenset({1, 2}): "frozenset", None: "none", b"b": "bytes",
             1.5: "float", Decimal("1.10"): "decimal", dt.date(2020, 1, 1): "date", 2**70: "big"},
    "tuple and set keys nested": {(frozenset({(1, 2)}), (3,)): {frozenset(): set()}},
    "one, True, 1.0 stay apart in a list": [1, True, 1.0, Decimal(1)],
    "sets": [set(), frozenset(), {1, "a", (2, 3)}, frozenset({frozenset({1})})],
    "named timezone": dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2), "X")),
    "utc": dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc),
    "utc named UTC is not the singleton": dt.datetime(2024, 3, 1, tzinfo=dt.timezone(dt.timedelta(0), "UTC")),
    "sub-minute offset": dt.time(1, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(seconds=-1, microseconds=7))),
    "zoneinfo fold": dt.datetime(2021, 11, 7, 1, 30, 0, 123456, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1),
    "naive fold": dt.datetime(2021, 11, 7, 1, 30, fold=1),
    "time fold": dt.time(1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    "extreme datetimes": [dt.datetime.min, dt.datetime.max, dt.date.min, dt.date.max, dt.time.max],
    "timedeltas": [dt.timedelta.min, dt.timedelta.max, dt.timedelta(-1, 1, 1), dt.timedelta(0)],
    "decimals": [Decimal(s) for s in ("NaN", "-NaN", "sNaN", "-sNaN", "NaN123", "Infinity", "-Infinity",
                                      "-0", "0E-7", "1.000", "1E+5", "-1.23E-400", "9" * 60)],
    "uuids": [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4()],
    "strings": ["", "é", "\U0001f600", "\x00", "a" * 70000],
    "empty containers": [[], (), {}, set(), frozenset()],
    "deep at the limit": None,  # filled below
}
_deep: object = 0
for _level in range(MAX_DEPTH):
    _deep = [_deep] if _level % 2 else (_deep,)
EXAMPLES["deep at the limit"] = _deep


@pytest.mark.parametrize("value", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_named_examples_round_trip_exactly(value: object) -> None:
    assert_same(value, round_trip(value))


def test_zoneinfo_comes_back_as_the_cached_zone() -> None:
    back = round_trip(dt.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")))
    assert back.tzinfo is zoneinfo.ZoneInfo("Asia/Tokyo")


def test_utc_comes_back_as_the_singleton() -> None:
    assert round_trip(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)).tzinfo is dt.timezone.utc


def test_tuple_keys_are_usable_after_a_round_trip() -> None:
    back = round_trip({(1, (2, frozenset({3}))): "v"})
    assert back[(1, (2, frozenset({3})))] == "v"


def test_encoding_a_bytearray_does_not_change_the_callers_state() -> None:
    state = {"a": [bytearray(b"x")], "t": (bytearray(b"y"),)}
    encode_state(state)
    assert type(state["a"][0]) is bytearray and type(state["t"][0]) is bytearray


# ---------------------------------------------------------------- refused values


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Point(NamedTuple):
    x: int
    y: int


class Name(str):
    pass


class Ratio(float):
    pass


class Items(list):
    pass


class Stamp(dt.datetime):
    pass


class LocalZone(dt.tzinfo):
    def utcoffset(self, d: object) -> dt.timedelta:
        return dt.timedelta(hours=1)

    def dst(self, d: object) -> dt.timedelta:
        return dt.timedelta(0)


class MyZone(zoneinfo.ZoneInfo):
    pass


def keyless_zone(key: str | None = None) -> zoneinfo.ZoneInfo:
    """A ZoneInfo made from a file: it has no key (or the one given, which names no file it
    was read from), so it cannot be stored by name."""
    for directory in zoneinfo.TZPATH:
        path = os.path.join(directory, "UTC")
        if os.path.isfile(path):
            with open(path, "rb") as file:
                return zoneinfo.ZoneInfo.from_file(file, key=key)
    pytest.skip("no system time zone database")


REFUSED = [
    # (state, path, type name)
    ({"steps": [0, 1, {"when": Opaque()}]}, "state['steps'][2]['when']", "Opaque"),
    (Opaque(), "state", "Opaque"),
    ({"c": Color.RED}, "state['c']", "Color"),
    ({"lvl": [Level.LOW]}, "state['lvl'][0]", "Level"),
    ({"p": Point(1, 2)}, "state['p']", "Point"),
    (collections.OrderedDict(a=1), "state", "OrderedDict"),
    ({"d": collections.defaultdict(list)}, "state['d']", "defaultdict"),
    ([Name("x")], "state[0]", "Name"),
    ([Ratio(1.5)], "state[0]", "Ratio"),
    ({"l": Items()}, "state['l']", "Items"),
    ([1, (2, (3, Opaque()))], "state[1][1][1]", "Opaque"),
    ({"s": {1, Opaque()}}, "state['s'][<member Opaque()>]", "Opaque"),
    ({(1, Opaque()): "v"}, "state[<key (1, Opaque())>][1]", "Opaque"),
    ({Opaque(): 1}, "state[<key Opaque()>]", "Opaque"),
    ({1: {frozenset({Opaque()})}}, "state[1][<member frozenset({Opaque()})>][<member Opaque()>]", "Opaque"),
    ({"nan": {math.nan: 1}}, "state['nan'][<key nan>]", "float"),
    ({(1, math.nan): 2}, "state[<key (1, nan)>][1]", "float"),
    ({"s": {math.nan}}, "state['s'][<member nan>]", "float"),
    (frozenset({(0, (math.nan,))}), "state[<member (0, (nan,))>][1][0]", "float"),
    ({Decimal("NaN"): 1}, "state[<key Decimal('NaN')>]", "decimal.Decimal"),
    ({"x": "ok", "y": "bad \udc80"}, "state['y']", "str"),
    ({"\ud800": 1}, "state[<key '\\ud800'>]", "str"),
    ({"m": memoryview(b"x")}, "state['m']", "memoryview"),
    ([msgpack.ExtType(2, b"")], "state[0]", "msgpack.ext.ExtType"),
    ({"t": msgpack.Timestamp(1, 0)}, "state['t']", "msgpack.ext.Timestamp"),
    ({(msgpack.ExtType(1, b"x"),): 1}, "state[<key (ExtType(code=1, data=b'x'),)>][0]", "msgpack.ext.ExtType"),
    ({"when": Stamp(2024, 1, 1)}, "state['when']", "Stamp"),
    ({"when": dt.datetime(2024, 1, 1, tzinfo=LocalZone())}, "state['when']", "LocalZone"),
    ([dt.time(tzinfo=LocalZone())], "state[0]", "LocalZone"),
    ({"when": dt.datetime(2024, 1, 1, tzinfo=MyZone("UTC"))}, "state['when']", "MyZone"),
    ([1j], "state[0]", "complex"),
    ({"r": range(3)}, "state['r']", "range"),
    ({"f": len}, "state['f']", "builtin_function_or_method"),
    ([object()], "state[0]", "object"),
    ({"t": int}, "state['t']", "type"),
]


@pytest.mark.parametrize(("state", "path", "type_name"), REFUSED, ids=[p for _, p, _ in REFUSED])
def test_unsupported_value_is_refused_naming_its_path(state: object, path: str, type_name: str) -> None:
    with pytest.raises(UnsupportedTypeError) as caught:
        encode_state(state)
    error = caught.value
    assert error.path == path
    assert error.type_name.endswith(type_name)
    assert path in str(error) and type_name.rsplit(".", 1)[-1] in str(error)
    assert isinstance(error, TypeError) and isinstance(error, StateError)


def test_zone_without_a_key_is_refused() -> None:
    with pytest.raises(UnsupportedTypeError, match="ZoneInfo without a key") as caught:
        encode_state({"when": dt.datetime(2024, 1, 1, tzinfo=keyless_zone())})
    assert caught.value.path == "state['when']"


@pytest.mark.parametrize("key", ["Europe/Paris", "Custom/Zone"])
def test_zone_read_from_a_file_is_refused_even_with_a_key(key: str) -> None:
    """from_file(f, key=...) came back as the system's zone of that key (other rules: UTC's
    file under Europe/Paris's name came back as Paris), or failed every load (a key the
    system does not have). It is refused when encoded, naming where."""
    for state, path in (({"when": dt.datetime(2024, 7, 1, tzinfo=keyless_zone(key))}, "state['when']"),
                        ([dt.time(12, tzinfo=keyless_zone(key))], "state[0]")):
        with pytest.raises(UnsupportedTypeError, match="from_file") as caught:
            encode_state(state)
        assert caught.value.path == path and caught.value.type_name.endswith("ZoneInfo")


def test_subclass_refusal_says_what_to_convert_to() -> None:
    with pytest.raises(UnsupportedTypeError, match=r"subclass of dict: convert it to a plain dict"):
        encode_state({"o": collections.OrderedDict()})


def test_nan_is_fine_as_a_plain_value() -> None:
    assert_same([math.nan, Decimal("NaN"), (math.nan,)], round_trip([math.nan, Decimal("NaN"), (math.nan,)]))


def test_root_names_the_path() -> None:
    with pytest.raises(UnsupportedTypeError) as caught:
        encode_state({"k": Opaque()}, root="metadata")
    assert caught.value.path == "metadata['k']"


def test_long_keys_are_shortened_in_the_path() -> None:
    with pytest.raises(UnsupportedTypeError) as caught:
        encode_state({"k" * 500: Opaque()})
    assert len(caught.value.path) < 100 and "..." in caught.value.path


def test_nan_values_in_a_plain_state_round_trip_and_nan_keys_are_refused() -> None:
    assert_same({"x": [math.nan, -math.nan, math.inf, 1.5]}, round_trip({"x": [math.nan, -math.nan, math.inf, 1.5]}))
    assert_same({math.inf: 1, -math.inf: 2}, round_trip({math.inf: 1, -math.inf: 2}))
    with pytest.raises(UnsupportedTypeError) as caught:
        encode_state({"ok": [1.0], "m": {2.5: 1, struct.unpack(">d", bytes.fromhex("7ff0000000000001"))[0]: 2}})
    assert caught.value.path == "state['m'][<key nan>]"


plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text() | st.integers(-(2**63), 2**64 - 1) | st.binary() | st.booleans() | st.floats(),
                      inner, max_size=6),
    max_leaves=40,
)


@FAST
@given(plain_values)
def test_plain_states_are_written_as_plain_msgpack_by_both_paths(value: object) -> None:
    """The wire form of None/bool/int/float/str/bytes/list/dict is msgpack's own, whichever
    path encodes it: generations written before the fast path decode, and vice versa."""
    from redis_ckpt.core.codec.careful import encode_carefully, pack

    try:
        careful = encode_carefully(value, "state", pack, None)
    except UnsupportedTypeError:  # a NaN key: refused by both
        with pytest.raises(UnsupportedTypeError):
            encode_state(value)
        return
    assert encode_state(value) == careful == msgpack.packb(value, use_bin_type=True)
    assert bytes(encode_state_buffer(value)) == careful
    assert_same(value, decode_state(careful))


# ---------------------------------------------------------------- ormsgpack, the fast path's packer
#
# The matrix the fast path rests on: with every passthrough option on and no ``default``, what
# ormsgpack packs natively, and how. A type it starts to pack natively in a later version (or
# packs otherwise than msgpack does) fails here, not silently in users' checkpoints.


class IntSub(int):
    pass


class DictSub(dict):
    pass


class BytesSub(bytes):
    pass


@dataclasses.dataclass
class Record:
    x: int = 1


#: ormsgpack packs these as msgpack does: the fast path's types (an int within 64 bits)
ORM_PLAIN = [None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, math.nan, math.inf, "", "x" * 40,
             "é€😀", b"", b"\x00" * 300, [], [1, [2]], {}, {"k": {"j": [None]}}]
#: ormsgpack packs these natively but not as themselves: the scan (plain.scan) must rule them out
ORM_NATIVE_LOSSY = [bytearray(b"ab"), memoryview(b"ab"), ormsgpack.Ext(2, b"")]
if hasattr(ormsgpack, "Fragment"):  # 1.13+: its bytes are written as they are
    ORM_NATIVE_LOSSY.append(ormsgpack.Fragment(b"\xc0"))
#: ormsgpack refuses every other type (with these options it would hand them to ``default``)
ORM_REFUSED = [
    2**64, -(2**63) - 1, (1, 2), (), {1}, frozenset({1}), dt.datetime(2024, 1, 1), dt.date(2024, 1, 1),
    dt.time(1, 2), dt.timedelta(1), Decimal("1.5"), uuid.UUID(int=5), Name("x"), IntSub(3), Ratio(1.5),
    DictSub(a=1), Items([1]), BytesSub(b"x"), Point(1, 2), Color.RED, Level.LOW, Record(),
    collections.OrderedDict(a=1), collections.defaultdict(int), msgpack.ExtType(2, b""), msgpack.Timestamp(1, 0),
    1j, range(2), object(), Opaque(), "\ud800",
]
try:
    import numpy
except ImportError:  # not a dependency: its types are in the matrix where it is installed
    pass
else:
    ORM_REFUSED += [numpy.array([1, 2]), numpy.int64(3), numpy.float64(1.5), numpy.bool_(True)]


def orm_pack(value: object) -> bytes:
    from redis_ckpt.core.codec.plain import ORM_STRICT

    return ormsgpack.packb(value, option=ORM_STRICT)


@pytest.mark.parametrize("value", ORM_PLAIN, ids=repr)
def test_ormsgpack_packs_the_plain_types_as_msgpack_does(value: object) -> None:
    assert orm_pack([value]) == msgpack.packb([value], use_bin_type=True)
    assert encode_state([value]) == msgpack.packb([value], use_bin_type=True)


@pytest.mark.parametrize("value", ORM_NATIVE_LOSSY, ids=lambda v: type(v).__name__)
def test_what_ormsgpack_packs_natively_but_lossily_never_reaches_it(value: object) -> None:
    from redis_ckpt.core.codec.plain import scan

    assert type(msgpack.unpackb(orm_pack([value]))[0]) is not type(value)  # it would not come back as itself
    assert scan([value], None) is None and scan({"k": [value]}, None) is None  # so the scan rules it out
    if type(value) is bytearray:
        assert_same({"k": [value]}, round_trip({"k": [value]}))
    else:
        with pytest.raises(UnsupportedTypeError) as caught:
            encode_state({"k": [1, value]})
        assert caught.value.path == "state['k'][1]" and caught.value.type_name.endswith(type(value).__name__)


@pytest.mark.parametrize("value", ORM_REFUSED, ids=lambda v: type(v).__name__)
def test_ormsgpack_refuses_every_other_type(value: object) -> None:
    with pytest.raises(TypeError):
        orm_pack([value])
    with pytest.raises(TypeError):
        orm_pack({"k": value})


@pytest.mark.parametrize("key", [1, -1, 2**64 - 1, 1.5, math.nan, None, True, b"k", (1,), frozenset({1}),
                                 dt.date(2024, 1, 1), uuid.UUID(int=5), Decimal(1), Name("k"), IntSub(1), Level.LOW],
                         ids=repr)
def test_ormsgpack_refuses_every_key_but_a_str(key: object) -> None:
    """So no NaN key, and no key it would write as a str (a date, a uuid), gets past it: such
    a state goes to msgpack's packer or the careful path, which keep or refuse it as before."""
    with pytest.raises(TypeError):
        orm_pack({"a": 1, "m": {"x": 1, key: 2}})
    state = {"a": 1.0, "m": {"x": 1, key: 2}}  # a level that holds more than containers: keys unknown to the scan
    if type(key) in (Name, IntSub, Level) or key != key:
        with pytest.raises(UnsupportedTypeError) as caught:
            encode_state(state)
        assert caught.value.path == f"state['m'][<key {key!r}>]"
        return
    assert_same(state, round_trip(state))
    if type(key) in (int, float, bool, bytes, type(None)):
        assert encode_state(state) == msgpack.packb(state, use_bin_type=True)


def test_ormsgpack_packs_every_depth_encoding_allows() -> None:
    state: object = 1
    for _ in range(MAX_DEPTH):
        state = {"k": [state]}  # 2 * MAX_DEPTH levels: its own bound is 255
    with pytest.raises(TypeError):
        orm_pack(state)  # deeper than ormsgpack goes: the careful path names the level
    state = 1
    for _ in range(MAX_DEPTH):
        state = [state]
    assert orm_pack(state) == msgpack.packb(state) == encode_state(state)


def test_without_ormsgpack_msgpack_packs_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from redis_ckpt.core.codec import plain

    states = [{"messages": [{"id": "a", "n": 1, "x": 1.5, "b": b"\x01"}] * 3, "step": 2}, {"m": {1: 2}}, [1, "x"]]
    with_it = [encode_state(s) for s in states]
    monkeypatch.setattr(plain, "ormsgpack", None)
    assert [encode_state(s) for s in states] == with_it == [msgpack.packb(s, use_bin_type=True) for s in states]


def test_markers_written_as_ext_16_or_32_still_make_tuples_and_sets() -> None:
    assert_same((1,), decode_state(b"\x92\xc8\x00\x00\x02\x01"))
    assert_same({1}, decode_state(b"\x92\xc9\x00\x00\x00\x00\x03\x01"))
    with pytest.raises(ValueError):
        decode_state(b"\x92\x01\xc8\x00\x00\x02")  # a marker not first


# ---------------------------------------------------------------- cycles and depth


def test_self_containing_list_is_a_cycle() -> None:
    state: list = [1]
    state.append(state)
    with pytest.raises(UnsupportedTypeError, match=r"cycle: this list is the one at state,") as caught:
        encode_state(state)
    assert caught.value.path == "state[1]"


def test_cycle_through_dict_and_tuple_names_both_ends() -> None:
    inner: list = []
    state = {"a": {"b": (inner,)}}
    inner.append(state["a"])
    with pytest.raises(UnsupportedTypeError, match=r"is the one at state\['a'\]") as caught:
        encode_state(state)
    assert caught.value.path == "state['a']['b'][0][0]"


def test_wide_cycle_is_refused_quickly() -> None:
    state: list = []
    state.extend([state] * 1000)
    started = time.monotonic()
    with pytest.raises(UnsupportedTypeError, match="cycle"):
        encode_state(state)
    assert time.monotonic() - started < 1


def test_shared_subtrees_are_fine() -> None:
    shared = {"x": [1, 2]}
    assert_same([shared, shared, (shared,)], round_trip([shared, shared, (shared,)]))


@pytest.mark.parametrize("wrap", [lambda v: [v], lambda v: (v,), lambda v: {"k": v}, lambda v: [{"k": (v,)}]],
                         ids=["list", "tuple", "dict", "mixed"])
def test_too_deep_is_refused_not_a_recursion_error(wrap: Any) -> None:
    state: object = 0
    for _ in range(MAX_DEPTH + 1):
        state = wrap(state)
    with pytest.raises(UnsupportedTypeError, match=f"nested more than {MAX_DEPTH} levels deep"):
        encode_state(state)


def test_far_too_deep_is_refused_not_a_recursion_error() -> None:
    state: list = []
    for _ in range(100_000):
        state = [state]
    with pytest.raises(UnsupportedTypeError, match="nested more than"):
        encode_state(state)


@pytest.mark.parametrize("wrap", [lambda k: (k,), lambda k: frozenset({k})], ids=["tuple", "frozenset"])
def test_deep_keys_are_bounded_too(wrap: Any) -> None:
    key: object = 0
    for _ in range(MAX_DEPTH + 1):
        key = wrap(key)
    with pytest.raises(UnsupportedTypeError, match="nested more than"):
        encode_state({key: 1})
    with pytest.raises(UnsupportedTypeError, match="nested more than"):
        encode_state({key})


# ---------------------------------------------------------------- decoding garbage


def ext(code: int, data: bytes = b"") -> msgpack.ExtType:
    return msgpack.ExtType(code, data)


GARBAGE = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "incomplete array": b"\x92\x01",
    "extra data": b"\x01\x02",
    "huge array claim": b"\xdd\xff\xff\xff\xff",
    "huge map claim": b"\xdf\xff\xff\xff\xff",
    "huge str claim": b"\xdb\xff\xff\xff\xff",
    "deep arrays": b"\x91" * 100_000 + b"\xc0",
    "deep tuples": b"\x92\xc7\x00\x02" * 100_000 + b"\xc0",
    "unknown extension": msgpack.packb(ext(99, b"x")),
    "marker alone": msgpack.packb(ext(2)),
    "marker not first": msgpack.packb([1, ext(2)]),
    "two markers": msgpack.packb([ext(2), ext(3)]),
    "marker as map value": msgpack.packb({"a": ext(3)}),
    "unhashable set member": msgpack.packb([ext(3), [1]]),
    "list as map key": b"\x81\x91\x01\x02",
    "small int as big int": msgpack.packb(ext(1, b"\x05")),
    "bad uuid": msgpack.packb(ext(10, b"short")),
    "bad decimal": msgpack.packb(ext(9, b"12abc")),
    "non-ascii decimal": msgpack.packb(ext(9, b"\xff")),
    "decimal with spaces": msgpack.packb(ext(9, b" 1")),
    "date out of range": msgpack.packb(ext(6, msgpack.packb([2020, 13, 1]))),
    "date of floats": msgpack.packb(ext(6, msgpack.packb([2020.0, 1, 1]))),
    "date too short": msgpack.packb(ext(6, msgpack.packb([2020, 1]))),
    "date not a list": msgpack.packb(ext(6, b"\x05")),
    "timedelta of floats": msgpack.packb(ext(8, msgpack.packb([1.5, 0, 0]))),
    "datetime with ext inside": msgpack.packb(ext(5, msgpack.packb([ext(5, b""), 1, 1, 0, 0, 0, 0, 0, None]))),
    "datetime bad fold": msgpack.packb(ext(5, msgpack.packb([2020, 1, 1, 0, 0, 0, 0, 2, None]))),
    "unknown zone": msgpack.packb(ext(5, msgpack.packb([2020, 1, 1, 0, 0, 0, 0, 0, "No/Such_Zone"]))),
    "zone path escape": msgpack.packb(ext(5, msgpack.packb([2020, 1, 1, 0, 0, 0, 0, 0, "../../etc/passwd"]))),
    "zone directory": msgpack.packb(ext(5, msgpack.packb([2020, 1, 1, 0, 0, 0, 0, 0, "America"]))),
    "offset too large": msgpack.packb(ext(7, msgpack.packb([0, 0, 0, 0, 0, [86_400_000_000]]))),
    "offset name not str": msgpack.packb(ext(7, msgpack.packb([0, 0, 0, 0, 0, [0, 5]]))),
    "tz of wrong shape": msgpack.packb(ext(7, msgpack.packb([0, 0, 0, 0, 0, [1, "a", "b"]]))),
}


@pytest.mark.parametrize("payload", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_raises_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode_state(payload)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_value_error(payload: bytes) -> None:
    try:
        decode_state(payload)
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(values, st.data())
def test_mutated_payloads_raise_only_value_error(value: object, data: st.DataObject) -> None:
    payload = bytearray(encode_state(value))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(payload)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip" and at < len(payload):
            payload[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "insert":
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        else:
            del payload[at:at + 1]
    try:
        decode_state(bytes(payload))
    except ValueError:
        pass


raw_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=5),
                       st.binary(max_size=5), st.sampled_from(["UTC", "Europe/Paris", "../x", ""]))
raw_trees = st.recursive(
    raw_leaves, lambda inner: st.lists(inner, max_size=9) | st.dictionaries(raw_leaves, inner, max_size=3),
    max_leaves=12,
)
extensions = st.builds(
    msgpack.ExtType, st.integers(0, 12),
    st.binary(max_size=17) | raw_trees.map(lambda t: msgpack.packb(t, use_bin_type=True)),
)
forged_trees = st.recursive(
    raw_leaves | extensions,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(raw_leaves | extensions, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(forged_trees)
def test_well_formed_msgpack_with_forged_extensions_raises_only_value_error(tree: object) -> None:
    """Valid msgpack whose extensions carry anything: decodes or raises ValueError, nothing else."""
    try:
        decode_state(msgpack.packb(tree, use_bin_type=True))
    except ValueError:
        pass


def test_deepest_state_needs_little_c_stack() -> None:
    """Nested containers never nest msgpack calls (each nested unpack puts ~40 KB on the C stack)."""
    state: object = 0
    for level in range(MAX_DEPTH):
        state = [state] if level % 3 else ({"k": state} if level % 2 else (state,))
    results: list = []
    previous = threading.stack_size(256 * 1024)
    try:
        worker = threading.Thread(target=lambda: results.append(round_trip(state)))
        worker.start()
        worker.join()
    finally:
        threading.stack_size(previous)
    assert_same(state, results[0])


def test_decoding_ignores_the_callers_decimal_context() -> None:
    with decimal.localcontext(decimal.Context(prec=2, traps=[])):
        assert str(round_trip(Decimal("1.23456789"))) == "1.23456789"
        with pytest.raises(ValueError):
            decode_state(msgpack.packb(ext(9, b"abc")))


def test_huge_length_claims_fail_fast() -> None:
    started = time.monotonic()
    for payload in (b"\xdd\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01"):
        with pytest.raises(ValueError):
            decode_state(payload)
    assert time.monotonic() - started < 0.5


# ---------------------------------------------------------------- nesting bounds on decode


def nested_payload(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


def test_decoding_nesting_past_msgpacks_stack_is_a_clear_value_error() -> None:
    from redis_ckpt.core.codec import UNPACK_MAX_DEPTH

    assert decode_state(nested_payload(UNPACK_MAX_DEPTH)) is not None
    for depth in (UNPACK_MAX_DEPTH + 1, 100_000):
        with pytest.raises(ValueError, match=f"nested more than {UNPACK_MAX_DEPTH} levels deep"):
            decode_state(nested_payload(depth))


def test_max_depth_on_decode_is_what_encoding_allows() -> None:
    deepest: Any = 1
    for _ in range(MAX_DEPTH):
        deepest = [deepest]
    assert decode_state(encode_state(deepest), max_depth=MAX_DEPTH) == deepest
    with pytest.raises(UnsupportedTypeError):
        encode_state([deepest])
    with pytest.raises(ValueError, match=f"nested more than {MAX_DEPTH} levels deep"):
        decode_state(nested_payload(MAX_DEPTH + 1), max_depth=MAX_DEPTH)
    deep_in_a_dict = b"\x82\xa1a\x01\xa1b\x91\x81\xa1c" + encode_state(deepest)  # {"a": 1, "b": [{"c": deepest}]}
    assert decode_state(deep_in_a_dict) == {"a": 1, "b": [{"c": deepest}]}
    with pytest.raises(ValueError, match="nested more than"):
        decode_state(deep_in_a_dict, max_depth=MAX_DEPTH)
    deep_key: Any = 1
    for _ in range(MAX_DEPTH):
        deep_key = (deep_key,)
    key_in_a_dict = b"\x81" + encode_state(deep_key) + b"\x01"  # {deep_key: 1}: one level more
    assert decode_state(key_in_a_dict) == {deep_key: 1}
    with pytest.raises(ValueError, match="nested more than"):
        decode_state(key_in_a_dict, max_depth=MAX_DEPTH)
    assert decode_state(encode_state(5), max_depth=MAX_DEPTH) == 5


# ---------------------------------------------------------------- the size limit, known early


def traced_peak(fn: Any) -> tuple[BaseException | None, int]:
    """(what ``fn()`` raised, the peak of Python allocations while it ran)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned for the caller to check
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return None, 0


MIB = 1024 * 1024


@pytest.mark.parametrize("shape", ["bytes", "str", "bytearray", "dict", "list-of-chunks", "tuple-in-dict",
                                   "set-member", "mixed-dict"])
def test_a_state_over_the_limit_is_refused_before_anything_is_copied(shape: str) -> None:
    blob = b"\x01" * (64 * MIB)
    state: Any = {
        "bytes": lambda: blob,
        "str": lambda: "x" * (64 * MIB),
        "bytearray": lambda: bytearray(blob),
        "dict": lambda: {"blob": blob, "step": 1},
        "list-of-chunks": lambda: [blob[i:i + MIB] for i in range(0, len(blob), MIB)],
        "tuple-in-dict": lambda: {"a": {"b": (1, Decimal("2"), blob)}},
        "set-member": lambda: {"s": {blob, b"x"}},
        "mixed-dict": lambda: {f"k{i}": (blob if i == 20 else i) for i in range(40)},
    }[shape]()
    error, peak = traced_peak(lambda: encode_state(state, limit=16 * MIB))
    assert isinstance(error, StateTooLargeError) and error.limit == 16 * MIB and error.size > 16 * MIB
    assert "max_state_bytes" in str(error)
    assert peak < MIB  # the 64 MiB were never copied


def test_the_exact_size_is_checked_after_encoding() -> None:
    state = [2**40] * 1000  # 1000 items, 9 bytes each once encoded
    assert len(encode_state(state)) == 9003
    with pytest.raises(StateTooLargeError) as caught:
        encode_state(state, limit=9002)
    assert (caught.value.size, caught.value.limit) == (9003, 9002)
    assert encode_state(state, limit=9003) == encode_state(state)


@given(st.recursive(st.none() | st.integers() | st.text() | st.binary(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner) | st.tuples(inner, inner),
                    max_leaves=30))
@FAST
def test_the_early_size_is_a_lower_bound(value: object) -> None:
    size = len(encode_state(value))
    assert encode_state(value, limit=size) == encode_state(value)
    with pytest.raises(StateTooLargeError):
        encode_state(value, limit=size - 1)


# ---------------------------------------------------------------- another thread changing the state


def test_a_state_changed_by_another_thread_is_a_state_error_never_a_torn_payload() -> None:
    """msgpack writes a list's length, then its items; default() runs Python for each Decimal/tuple,
    and a list another thread appends to meanwhile used to come out as invalid msgpack."""
    state: dict[str, Any] = {"rows": [(i, Decimal(i)) for i in range(5000)], "seen": {}}
    stop = threading.Event()

    def mutate() -> None:
        i = 0
        while not stop.is_set():
            rows = state["rows"]
            rows.append((i, Decimal(1)))
            if len(rows) > 5100:
                del rows[5000:]
            state["seen"][i % 64] = i
            if i % 3 == 0:
                state["seen"].pop((i + 7) % 64, None)
            i += 1

    thread = threading.Thread(target=mutate)
    thread.start()
    outcomes = collections.Counter()
    try:
        for _ in range(60):
            try:
                decoded = decode_state(encode_state(state))
            except StateError as exc:
                assert "changed while it was being encoded" in str(exc) and not isinstance(exc, UnsupportedTypeError)
                outcomes["refused"] += 1
            else:
                assert type(decoded) is dict and len(decoded["rows"]) >= 5000
                outcomes["encoded"] += 1
    finally:
        stop.set()
        thread.join()
    assert sum(outcomes.values()) == 60


@pytest.mark.parametrize("key", [str, int], ids=["str-keys-ormsgpack", "int-keys-msgpack"])
def test_a_plain_state_changed_by_another_thread_always_encodes_whole(key: type) -> None:
    """A state of plain types is packed without calling back into Python (by ormsgpack when
    every key is a str, else by msgpack; neither releases the GIL), so another thread cannot
    run in the middle: every encode is a whole, valid snapshot."""
    from redis_ckpt.core.codec.plain import OTHER_KEYS, scan

    state: dict[str, Any] = {"rows": [{"i": i, "name": f"row {i}"} for i in range(20000)], "seen": {key(0): [0]}}
    assert scan(state, None) == (0 if key is str else OTHER_KEYS)  # the packer named in the test id
    stop = threading.Event()

    def mutate() -> None:
        i = 0
        while not stop.is_set():
            rows = state["rows"]
            rows.append({"i": i, "name": "new"})
            if len(rows) > 20100:
                del rows[20000:]
            state["seen"][key(i % 64)] = [i]
            if i % 3 == 0:
                state["seen"].pop(key((i + 7) % 64), None)
            i += 1

    thread = threading.Thread(target=mutate)
    thread.start()
    try:
        for _ in range(40):
            decoded = decode_state(encode_state(state))
            assert type(decoded) is dict and 20000 <= len(decoded["rows"]) <= 20101  # between append and trim
    finally:
        stop.set()
        thread.join()
