"""``show --state``'s JSON: every type the codec stores, tagged where JSON cannot hold it;
and a damaged frame described as far as it verifies, its payload never decoded."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
import zoneinfo
from decimal import Decimal

import pytest

from redis_ckpt.cli.state import tagged
from redis_ckpt.core.codec import decode_state, encode_state
from redis_ckpt.core.frame import encode_frame, read_header
from redis_ckpt.core.frame.damage import frame_report
from redis_ckpt.errors import FrameError

UTC = dt.timezone.utc


def round_trip(state):
    """What show --state prints for ``state`` once stored and read back, as parsed JSON."""
    return json.loads(json.dumps(tagged(decode_state(encode_state(state))), allow_nan=False))


def test_json_values_stay_themselves():
    state = {"a": 1, "b": [1.5, "x", None, True], "c": {"d": -2}}
    assert round_trip(state) == state


def test_non_json_values_are_tagged():
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    state = {
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "local": dt.datetime(2026, 7, 1, 12, 0, tzinfo=paris),
        "day": dt.date(2026, 1, 2), "at": dt.time(3, 4, 5, 6), "took": dt.timedelta(days=1, seconds=2, microseconds=3),
        "blob": b"\x00\xff", "buf": bytearray(b"ab"), "cost": Decimal("1.10"), "id": uuid.UUID(int=7),
        "big": 2**80, "nan": float("nan"), "inf": float("-inf"),
        "pair": (1, 2), "seen": {3, 1, 2}, "frozen": frozenset({"a"}), "by_int": {1: "one"}, "$odd": 1,
    }
    out = round_trip({"s": state})["s"]["$dict"]
    got = {k: v for k, v in out}
    assert got["when"] == {"$datetime": "2026-01-02T03:04:05+00:00"}
    assert got["local"] == {"$datetime": "2026-07-01T12:00:00+02:00", "tz": "Europe/Paris"}
    assert got["day"] == {"$date": "2026-01-02"} and got["at"] == {"$time": "03:04:05.000006"}
    assert got["took"] == {"$timedelta": [1, 2, 3]}
    assert base64.b64decode(got["blob"]["$bytes"]) == b"\x00\xff" and got["buf"] == {"$bytearray": "YWI="}
    assert got["cost"] == {"$decimal": "1.10"} and got["id"] == {"$uuid": str(uuid.UUID(int=7))}
    assert got["big"] == {"$int": str(2**80)} and got["nan"] == {"$float": "nan"} and got["inf"] == {"$float": "-inf"}
    assert got["pair"] == {"$tuple": [1, 2]} and got["seen"] == {"$set": [1, 2, 3]}
    assert got["frozen"] == {"$frozenset": ["a"]} and got["by_int"] == {"$dict": [[1, "one"]]}
    assert got["$odd"] == 1  # a "$" key makes its dict a tagged list of pairs, never a fake tag


def frame(**kw):
    return encode_frame(encode_state({"secret": "x" * 100}), run_id="r", generation=2, token=5, owner="w",
                        created_ms=1, schema_version=3, metadata={"m": 1}, **kw)


def damage(blob, **kw) -> FrameError:
    with pytest.raises(FrameError) as e:
        read_header(blob, **kw)
    return e.value


def test_a_bit_flip_verifies_up_to_the_checksum_and_shows_the_unverified_header():
    blob = bytearray(frame())
    blob[-20] ^= 0x01  # inside the payload
    report = frame_report(bytes(blob), damage(bytes(blob)))
    assert report["failed"] == "checksum" and report["verified"] == ["stored", "magic", "format", "length"]
    assert report["header"]["verified"] is False and report["header"]["schema_version"] == 3
    assert report["header"]["fields"]["run"] == "r" and report["header"]["fields"]["gen"] == 2
    assert "secret" not in json.dumps(report)  # the payload is never decoded


def test_truncated_garbage_and_wrong_generation():
    blob = frame()
    cut = frame_report(blob[:40], damage(blob[:40]))
    assert cut["failed"] == "length" and cut["reason"] == "truncated"
    junk = frame_report(b"garbage!", damage(b"garbage!"))
    assert junk["failed"] == "magic" and junk["header"] is None and junk["verified"] == ["stored"]
    wrong = frame_report(blob, damage(blob, generation=3))
    assert wrong["failed"] == "identity" and wrong["header"]["verified"] is True
