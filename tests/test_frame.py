"""Frames: round trips, one named damage reason per kind of damage, and no damaged or
forged frame ever decodes into a wrong state or raises anything but FrameError."""

from __future__ import annotations

import datetime as dt
import os
import struct
import sys
import time
from typing import Any

import msgpack
import pytest
import xxhash
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_ckpt.core.codec import CODEC_MSGPACK, encode_state
from redis_ckpt.errors import CodecUnavailableError, CorruptCheckpointError, FrameDamage, FrameError
from redis_ckpt.core.frame import (
    FrameHeader,
    decode_frame,
    decode_payload,
    encode_frame,
    frame_checksum,
    read_header,
)

RUN = "run-1"
STATE = {"step": 3, "seen": (1, 2), "when": dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)}
PAYLOAD = encode_state(STATE)
META = {"note": "hi", "tags": frozenset({"a"}), 7: (1.5, b"x")}


def frame(payload: bytes = PAYLOAD, **overrides: Any) -> bytes:
    fields: dict[str, Any] = dict(run_id=RUN, generation=4, token=9, owner="worker-a", created_ms=1_700_000_000_000,
                                  schema_version=2, metadata=META)
    fields.update(overrides)
    return encode_frame(payload, **fields)


GOOD = frame()
GOOD_ZSTD = frame(PAYLOAD * 20, compression="zstd")


def forge(*, header: object = None, payload: bytes = PAYLOAD, magic: bytes = b"RCKP", version: int = 1,
          codec: int = 1, compression: int = 0, flags: int = 0, schema: int = 0,
          header_len: int | None = None, payload_len: int | None = None) -> bytes:
    """A frame built by hand from the documented layout, with a correct checksum."""
    if header is None:
        header = {"run": RUN, "gen": 4, "token": 9, "owner": "w", "created_ms": 0, "meta": encode_state({})}
    raw_header = header if isinstance(header, bytes) else msgpack.packb(header)
    body = (struct.pack(">4sBBBBII", magic, version, codec, compression, flags, schema,
                        len(raw_header) if header_len is None else header_len)
            + raw_header + struct.pack(">Q", len(payload) if payload_len is None else payload_len) + payload)
    return body + xxhash.xxh3_128_digest(body)


def reason_of(blob: bytes, **kw: Any) -> FrameDamage:
    with pytest.raises(FrameError) as caught:
        decode_frame(blob, **kw)
    return caught.value.reason


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("metadata", [None, {}, META])
def test_round_trip(compression: str, metadata: dict | None) -> None:
    payload = encode_state([STATE] * 10)
    blob = frame(payload, metadata=metadata, compression=compression)
    header, back = decode_frame(blob, run_id=RUN, generation=4)
    assert back == payload
    assert header == FrameHeader(
        run_id=RUN, generation=4, token=9, owner="worker-a", created_ms=1_700_000_000_000, schema_version=2,
        codec=CODEC_MSGPACK, compression=compression, metadata=metadata or {},
        payload_size=len(blob) - 40 - header_len(blob),
    )
    assert type(header.metadata) is dict
    assert read_header(blob) == header
    state = decode_payload(header, back)
    assert state == [STATE] * 10 and type(state[9]["seen"]) is tuple


def header_len(blob: bytes) -> int:
    return struct.unpack_from(">I", blob, 12)[0]


def test_metadata_keeps_exact_types() -> None:
    header = read_header(GOOD)
    assert header.metadata == META
    assert type(header.metadata["tags"]) is frozenset and type(header.metadata[7]) is tuple


def test_zstd_actually_compresses_and_payload_size_is_the_stored_size() -> None:
    header = read_header(GOOD_ZSTD)
    assert header.compression == "zstd"
    assert header.payload_size < len(PAYLOAD * 20)
    assert len(GOOD_ZSTD) == 40 + header_len(GOOD_ZSTD) + header.payload_size


def test_layout_is_as_documented() -> None:
    magic, version, codec, compression, flags, schema, hlen = struct.unpack_from(">4sBBBBII", GOOD)
    assert (magic, version, codec, compression, flags, schema) == (b"RCKP", 1, CODEC_MSGPACK, 0, 0, 2)
    (plen,) = struct.unpack_from(">Q", GOOD, 16 + hlen)
    assert plen == len(PAYLOAD) and len(GOOD) == 16 + hlen + 8 + plen + 16
    assert GOOD[24 + hlen:24 + hlen + plen] == PAYLOAD
    assert GOOD[-16:] == xxhash.xxh3_128_digest(GOOD[:-16])


def test_frame_checksum_is_the_trailing_digest() -> None:
    assert frame_checksum(GOOD) == xxhash.xxh3_128_hexdigest(GOOD[:-16])
    assert frame_checksum(GOOD) != frame_checksum(frame(generation=5))


def test_bytes_like_frames_are_accepted() -> None:
    assert decode_frame(bytearray(GOOD))[1] == PAYLOAD
    assert decode_frame(memoryview(GOOD))[1] == PAYLOAD


def test_empty_payload() -> None:
    assert decode_frame(frame(b""))[1] == b""
    assert decode_frame(frame(b"", compression="zstd"))[1] == b""


@pytest.mark.parametrize(("overrides", "message"), [
    ({"compression": "lz4"}, "compression"),
    ({"generation": -1}, "generation"),
    ({"token": True}, "token"),
    ({"schema_version": 2**32}, "schema_version"),
    ({"run_id": b"run"}, "run_id"),
    ({"codec": 7}, "codec"),
    ({"metadata": [1]}, "metadata"),
])
def test_bad_arguments_are_value_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frame(**overrides)


def test_unsupported_metadata_names_its_path() -> None:
    from redis_ckpt.errors import UnsupportedTypeError

    with pytest.raises(UnsupportedTypeError) as caught:
        frame(metadata={"ok": 1, "bad": object()})
    assert caught.value.path == "metadata['bad']"


# ---------------------------------------------------------------- one reason per damage


def test_bad_magic() -> None:
    assert reason_of(b"XCKP" + GOOD[4:]) is FrameDamage.BAD_MAGIC
    assert reason_of(b"{}") is FrameDamage.BAD_MAGIC
    assert reason_of(b'{"step": 3}') is FrameDamage.BAD_MAGIC


def test_future_format_version() -> None:
    future = GOOD[:4] + bytes([2]) + GOOD[5:]
    with pytest.raises(FrameError, match="format version 2") as caught:
        decode_frame(future)
    assert caught.value.reason is FrameDamage.UNKNOWN_FORMAT


def test_every_truncation_is_truncated() -> None:
    small = frame(b"xy", metadata=None)
    for length in range(len(small)):
        assert reason_of(small[:length]) is FrameDamage.TRUNCATED, length


def test_extra_byte_is_trailing_bytes() -> None:
    assert reason_of(GOOD + b"\x00") is FrameDamage.TRAILING_BYTES
    assert reason_of(GOOD + GOOD) is FrameDamage.TRAILING_BYTES


def test_bit_flips_anywhere_are_caught_before_decoding() -> None:
    early = {FrameDamage.BAD_MAGIC, FrameDamage.UNKNOWN_FORMAT, FrameDamage.TRUNCATED,
             FrameDamage.TRAILING_BYTES, FrameDamage.CHECKSUM}
    for blob in (GOOD, GOOD_ZSTD):
        for at in range(len(blob)):
            for bit in (0, 3, 7):
                damaged = bytearray(blob)
                damaged[at] ^= 1 << bit
                assert reason_of(bytes(damaged)) in early, (at, bit)
    flipped = bytearray(GOOD)
    flipped[-20] ^= 1
    assert reason_of(bytes(flipped)) is FrameDamage.CHECKSUM


def test_undefined_flags_with_a_valid_checksum() -> None:
    assert reason_of(forge(flags=1)) is FrameDamage.UNKNOWN_FORMAT


@pytest.mark.parametrize("header", [
    b"\xc1",                                                # not msgpack
    b"\x93\x01\x02\x03",                                    # an array, not a map
    b"",                                                    # nothing
    {"run": RUN, "gen": 4},                                 # fields missing
    {"run": RUN, "gen": "4", "token": 9, "owner": "w", "created_ms": 0, "meta": encode_state({})},
    {"run": RUN, "gen": True, "token": 9, "owner": "w", "created_ms": 0, "meta": encode_state({})},
    {"run": RUN, "gen": 4, "token": 9, "owner": "w", "created_ms": 0, "meta": encode_state([1])},
    {"run": RUN, "gen": 4, "token": 9, "owner": "w", "created_ms": 0, "meta": b"\xc1"},
    {"run": RUN, "gen": 4, "token": 9, "owner": "w", "created_ms": 0, "meta": "not bytes"},
    {"run": 1, "gen": 4, "token": 9, "owner": "w", "created_ms": 0, "meta": encode_state({})},
])
def test_bad_header_with_a_valid_checksum(header: object) -> None:
    assert reason_of(forge(header=header)) is FrameDamage.BAD_HEADER


def test_header_may_carry_fields_added_later() -> None:
    extra = {"run": RUN, "gen": 4, "token": 9, "owner": "w", "created_ms": 0, "meta": encode_state({}), "new": 1}
    assert decode_frame(forge(header=extra))[0].generation == 4


def test_unknown_codec_with_a_valid_checksum() -> None:
    with pytest.raises(FrameError, match="codec id 9") as caught:
        decode_frame(forge(codec=9))
    assert caught.value.reason is FrameDamage.UNKNOWN_CODEC


def test_unknown_compression_with_a_valid_checksum() -> None:
    assert reason_of(forge(compression=7)) is FrameDamage.UNKNOWN_COMPRESSION


def test_frame_of_another_run() -> None:
    with pytest.raises(FrameError, match="run-2") as caught:
        decode_frame(frame(run_id="run-2"), run_id=RUN, generation=4)
    error = caught.value
    assert error.reason is FrameDamage.WRONG_RUN
    assert error.run_id == RUN and error.generation == 4
    assert error.reasons == {4: "wrong-run"}


def test_wrong_generation() -> None:
    assert reason_of(GOOD, run_id=RUN, generation=5) is FrameDamage.WRONG_GENERATION
    with pytest.raises(FrameError):
        read_header(GOOD, generation=3)


def test_reasons_are_checked_in_order() -> None:
    """A frame with several faults reports the earliest one."""
    assert reason_of(forge(codec=9, compression=7), run_id="other") is FrameDamage.UNKNOWN_CODEC
    assert reason_of(forge(compression=7), run_id="other") is FrameDamage.UNKNOWN_COMPRESSION
    assert reason_of(forge(header=b"\xc1", codec=9)) is FrameDamage.BAD_HEADER
    assert reason_of(frame(run_id="other"), run_id=RUN, generation=99) is FrameDamage.WRONG_RUN
    bad_version = bytearray(GOOD + b"xx")
    bad_version[4] = 9
    assert reason_of(bytes(bad_version)) is FrameDamage.UNKNOWN_FORMAT


def test_payload_over_the_limit_is_undecodable() -> None:
    limit = len(PAYLOAD) * 20 - 1
    assert reason_of(frame(PAYLOAD * 20), max_payload_bytes=limit) is FrameDamage.UNDECODABLE
    assert reason_of(GOOD_ZSTD, max_payload_bytes=limit) is FrameDamage.UNDECODABLE
    assert decode_frame(GOOD_ZSTD, max_payload_bytes=limit + 1)[1] == PAYLOAD * 20


def zstd_frame_claiming(size: int) -> bytes:
    """A zstd frame header (single segment, 8-byte content size) claiming ``size`` bytes, then junk."""
    return zstandard.MAGIC_NUMBER.to_bytes(4, "little") + b"\xe0" + size.to_bytes(8, "little") + b"\x01\x00\x00"


@pytest.mark.parametrize("payload", [
    b"not zstd at all",
    zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 100),
    zstandard.ZstdCompressor(write_checksum=True).compress(b"x" * 1000)[:-6] + b"\x00" * 6,
    zstd_frame_claiming(2**60),
    zstd_frame_claiming(10),
], ids=["garbage", "no-content-size", "corrupt", "impossible-size", "lying-size"])
def test_bad_zstd_with_a_valid_checksum_is_undecodable(payload: bytes) -> None:
    started = time.monotonic()
    assert reason_of(forge(payload=payload, compression=1)) is FrameDamage.UNDECODABLE
    assert time.monotonic() - started < 0.5


def test_undecodable_payload() -> None:
    header, payload = decode_frame(frame(b"\xc1"))
    with pytest.raises(FrameError) as caught:
        decode_payload(header, payload)
    assert caught.value.reason is FrameDamage.UNDECODABLE
    assert caught.value.run_id == RUN and caught.value.generation == 4


def test_frame_errors_are_corrupt_checkpoint_errors() -> None:
    with pytest.raises(CorruptCheckpointError):
        decode_frame(GOOD[:-1])
    with pytest.raises(FrameError):
        frame_checksum(b"short")


@pytest.mark.parametrize("field", ["header", "payload"])
def test_huge_length_claim_fails_fast(field: str) -> None:
    lengths = {"header_len": 2**32 - 1} if field == "header" else {"payload_len": 2**60}
    started = time.monotonic()
    assert reason_of(forge(**lengths)) is FrameDamage.TRUNCATED
    assert time.monotonic() - started < 0.1


# ---------------------------------------------------------------- properties and fuzzing

edits = st.lists(
    st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]),
              st.integers(0, 10_000), st.binary(min_size=1, max_size=4)),
    min_size=1, max_size=3,
)


def apply(blob: bytes, changes: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(blob)
    for action, at, data in changes:
        at %= len(out) + 1
        if action == "flip" and at < len(out):
            out[at] ^= data[0] or 1
        elif action == "truncate":
            del out[at:]
        elif action == "insert":
            out[at:at] = data
        elif action == "delete":
            del out[at:at + len(data)]
        else:
            out[at:at + len(data)] = data
        if not out:
            break
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([GOOD, GOOD_ZSTD]), edits)
def test_any_damaged_frame_is_detected_never_decoded(blob: bytes, changes: list) -> None:
    damaged = apply(blob, changes)
    if damaged == blob:
        assert decode_frame(damaged)[1] == decode_frame(blob)[1]
        return
    with pytest.raises(FrameError):
        decode_frame(damaged)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_frame_errors(blob: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(blob)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_behind_a_valid_prefix_raise_only_frame_errors(tail: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(GOOD[:16] + tail)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([GOOD, GOOD_ZSTD]), edits, st.data())
def test_forged_frames_with_recomputed_checksums_raise_only_frame_errors(
    blob: bytes, changes: list, data: st.DataObject
) -> None:
    """An attacker (or a bug) that also fixes the checksum still only gets FrameError or a clean decode."""
    body = bytearray(apply(blob[:-16], changes))
    if len(body) >= 16 and data.draw(st.booleans()):
        struct.pack_into(">I", body, 12, data.draw(st.integers(0, 2**32 - 1)))  # header length
    hlen = struct.unpack_from(">I", body, 12)[0] if len(body) >= 16 else 0
    if len(body) >= 24 + hlen and data.draw(st.booleans()):
        struct.pack_into(">Q", body, 16 + hlen, data.draw(st.integers(0, 2**64 - 1)))  # payload length
    forged = bytes(body) + xxhash.xxh3_128_digest(bytes(body))
    try:
        header, payload = decode_frame(forged, max_payload_bytes=1 << 20)
        decode_payload(header, payload)
    except FrameError:
        pass


# ---------------------------------------------------------------- zstd missing


@pytest.fixture
def no_zstd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)


@pytest.mark.usefixtures("no_zstd")
def test_encoding_zstd_without_the_package_names_the_extra() -> None:
    with pytest.raises(CodecUnavailableError) as caught:
        frame(compression="zstd")
    assert caught.value.extra == "zstd" and caught.value.run_id == RUN
    assert "pip install 'redis-ckpt[zstd]'" in str(caught.value)


@pytest.mark.usefixtures("no_zstd")
def test_decoding_zstd_without_the_package_names_the_extra() -> None:
    with pytest.raises(CodecUnavailableError) as caught:
        decode_frame(GOOD_ZSTD)
    assert caught.value.extra == "zstd"
    assert read_header(GOOD_ZSTD).compression == "zstd"  # verifying needs no decompression
    assert decode_frame(GOOD)[1] == PAYLOAD  # uncompressed frames need no zstd


def test_errors_name_the_frames_own_run_when_none_was_given() -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(forge(codec=9))
    assert caught.value.run_id == RUN and caught.value.generation == 4


# ---------------------------------------------------------------- header fields a reader turns into objects


def header_with(**changes: object) -> dict:
    header = {"run": RUN, "gen": 4, "token": 9, "owner": "w", "created_ms": 0, "meta": encode_state({})}
    header.update(changes)
    return header


@pytest.mark.parametrize(("changes", "named"), [
    ({"created_ms": 10**17}, "created_ms"),                 # past year 9999
    ({"created_ms": -(10**15)}, "created_ms"),              # before year 1
    ({"created_ms": 2**64 - 1}, "created_ms"),
    ({"created_ms": -(2**63)}, "created_ms"),
    ({"gen": -1}, "gen"),
    ({"token": -5}, "token"),
    ({"token": 2**64 - 1}, "token"),
    ({"gen": 2**63}, "gen"),
    ({"meta": encode_state({"a": 1})[:-1]}, "metadata"),
    ({"meta": b"\x91" * 2000 + b"\xc0"}, "metadata"),       # nested past msgpack's limit
    ({"meta": encode_state((1, 2))}, "metadata"),
])
def test_header_fields_out_of_range_are_bad_header_naming_the_field(changes: dict, named: str) -> None:
    with pytest.raises(FrameError, match=named) as caught:
        read_header(forge(header=header_with(**changes)))
    assert caught.value.reason is FrameDamage.BAD_HEADER


def test_created_ms_at_the_ends_of_the_datetime_range_round_trips() -> None:
    from redis_ckpt.models import MAX_MS, MIN_MS, ms_to_datetime

    for ms in (MIN_MS, 0, MAX_MS):
        header = read_header(frame(created_ms=ms))
        assert header.created_ms == ms and ms_to_datetime(ms) is not None
    for ms in (MIN_MS - 1, MAX_MS + 1):
        with pytest.raises(ValueError, match="created_ms"):
            frame(created_ms=ms)
        assert ms_to_datetime(ms) is None
    assert ms_to_datetime(1_700_000_000_123) == dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------- decompression bombs


def zstd_bomb(content: bytes) -> bytes:
    """A frame whose zstd payload is as small as zstd makes it (no padding): what a forger stores."""
    compressed = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(content)
    return forge(payload=compressed, compression=1)


def test_a_zstd_frame_expanding_past_the_ratio_is_refused_before_decompressing() -> None:
    import tracemalloc

    from redis_ckpt.core.frame import MAX_ZSTD_RATIO

    content = bytes(64 * 1024 * 1024)
    bomb = zstd_bomb(content)
    assert len(bomb) * MAX_ZSTD_RATIO < len(content)  # zstd reaches ~32,000:1 on zeros
    del content
    tracemalloc.start()
    try:
        with pytest.raises(FrameError, match="more than 1000 times") as caught:
            decode_frame(bomb)  # no max_payload_bytes: the ratio alone bounds it
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.reason is FrameDamage.UNDECODABLE
    assert peak < 1024 * 1024  # nothing near the 64 MiB it claims was allocated


@pytest.mark.parametrize("size", [0, 1, 1000, 10**6, 3 * 10**7])
def test_the_writer_pads_what_compresses_past_the_ratio_and_it_still_loads(size: int) -> None:
    from redis_ckpt.core.frame import MAX_ZSTD_RATIO

    payload = encode_state(bytes(size))
    blob = frame(payload, compression="zstd")
    assert len(blob) * MAX_ZSTD_RATIO >= len(payload)
    assert len(blob) <= max(len(payload) // MAX_ZSTD_RATIO + 64, len(zstd_bomb(payload)) + 400)  # no more than needed
    header, back = decode_frame(blob, run_id=RUN, generation=4)
    assert back == payload and header.compression == "zstd" and header.metadata == META


def test_ordinary_data_is_not_padded() -> None:
    payload = encode_state([{"role": "user", "content": f"message {i}", "n": i} for i in range(2000)])
    blob = frame(payload, compression="zstd")
    assert "pad" not in msgpack.unpackb(blob[16:16 + header_len(blob)])


# ---------------------------------------------------------------- reading a chunked frame in pieces


def assemble(blob: bytes, chunk: int) -> Any:
    from redis_ckpt.core.frame import FrameAssembler

    assembler = FrameAssembler(len(blob))
    for at in range(0, len(blob), chunk):
        assembler.write(blob[at:at + chunk])
    return assembler.finish()


MIB = 1 << 20
LONG = [os.urandom(MIB + 17), os.urandom(2 * MIB), b"\x00" * (MIB + 1)]
ASSEMBLED_STATES = {
    "one long bin": {"blob": LONG[0], "note": "large", "when": dt.date(2024, 1, 1)},
    "in a tuple and a set": [1, (LONG[1], "t"), {LONG[2], b"short"}],
    "as a dict key": {LONG[0]: 1, "k": [LONG[1]]},
    "the same bin twice": [LONG[2], LONG[2]],
    "root": LONG[1],
    "none long enough": {"blob": os.urandom(MIB - 1), "rows": list(range(1000))},
    "past the walk": {"rows": [{"i": i} for i in range(5000)], "blob": LONG[0]},
}


@pytest.mark.parametrize("chunk", [1000, 7919, 1 << 16, 1 << 30], ids=["1000", "7919", "64k", "whole"])
@pytest.mark.parametrize("name", list(ASSEMBLED_STATES))
def test_a_frame_read_in_pieces_is_the_frame_and_its_long_bins_are_not_copied(name: str, chunk: int) -> None:
    from redis_ckpt.core.frame import AssembledFrame

    state = ASSEMBLED_STATES[name]
    blob = frame(encode_state(state))
    got = assemble(blob, chunk)
    assert len(got) == len(blob) and bytes(got) == blob
    assert frame_checksum(got) == frame_checksum(blob) and read_header(got) == read_header(blob)
    header, payload = decode_frame(got, run_id=RUN, generation=4)
    assert header == read_header(blob)
    back = decode_payload(header, payload)
    assert back == state and type(back) is type(state)
    if name == "one long bin":
        assert type(got) is AssembledFrame and back["blob"] is got.payload.leaves[0]  # the very object read into
    if name == "past the walk":  # not looked for past the walk's budget, and not joined either
        assert type(got) is AssembledFrame and got.payload.leaves == []
    if name == "in a tuple and a set":
        assert type(back[1]) is tuple and type(back[2]) is set
    if name == "none long enough":
        assert not isinstance(got, AssembledFrame) or got.payload.leaves == []


def test_a_compressed_frame_is_read_whole() -> None:
    blob = frame(encode_state({"blob": b"\x01" * (3 * MIB)}), compression="zstd")
    got = assemble(blob, 4096)
    assert type(got) is bytes and got == blob


@pytest.mark.parametrize("where", ["header", "before the bin", "inside the bin", "after the bin", "digest"])
def test_damage_in_a_frame_read_in_pieces_is_a_checksum_error(where: str) -> None:
    blob = bytearray(frame(encode_state({"a": "x" * 100, "blob": LONG[0], "z": [1, 2, 3]})))
    at = {"header": 30, "before the bin": len(blob) - len(LONG[0]) - 40, "inside the bin": len(blob) // 2,
          "after the bin": len(blob) - 20, "digest": len(blob) - 3}[where]
    blob[at] ^= 0x10
    with pytest.raises(FrameError) as caught:
        decode_frame(assemble(bytes(blob), 65536))
    assert caught.value.reason is FrameDamage.CHECKSUM


def test_a_frame_read_short_is_shorter() -> None:
    blob = frame(encode_state({"blob": LONG[0]}))
    from redis_ckpt.core.frame import FrameAssembler

    assembler = FrameAssembler(len(blob))
    assembler.write(blob[:MIB])
    got = assembler.finish()
    assert len(got) == MIB and bytes(got) == blob[:MIB]


@pytest.mark.parametrize("leaf", [False, True])
def test_a_placeholder_forged_into_a_stored_payload_is_undecodable(leaf: bool) -> None:
    """The ext code the reader uses for a long bin set apart is refused in a stored payload."""
    forged = [msgpack.ExtType(127, b"\x00\x00\x00\x00"), LONG[0] if leaf else b"x"]
    blob = frame(msgpack.packb(forged, use_bin_type=True))
    header, payload = decode_frame(assemble(blob, 65536))
    with pytest.raises(FrameError) as caught:
        decode_payload(header, payload)
    assert caught.value.reason is FrameDamage.UNDECODABLE


small_leaves = st.recursive(
    st.none() | st.integers() | st.text(max_size=40) | st.binary(max_size=300) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=5) | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(st.text(max_size=5) | st.binary(min_size=60, max_size=200), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(small_leaves, st.integers(1, 400), st.integers(1, 120))
def test_any_state_read_in_pieces_decodes_as_written(state: object, chunk: int, leaf_min: int) -> None:
    """With long bins made short (LEAF_MIN_BYTES patched), every cut of every frame reads back exactly."""
    import redis_ckpt.core.frame.assemble as frame_module

    blob = frame(encode_state(state))
    previous = frame_module.LEAF_MIN_BYTES
    frame_module.LEAF_MIN_BYTES = leaf_min
    try:
        got = assemble(blob, chunk)
    finally:
        frame_module.LEAF_MIN_BYTES = previous
    assert bytes(got) == blob
    header, payload = decode_frame(got)
    assert decode_payload(header, payload) == state


@pytest.mark.parametrize("forged", ["frame size", "bin length"])
def test_lengths_claiming_more_than_arrives_allocate_nothing_for_it(forged: str) -> None:
    """A forged manifest size or bin length costs a reader what arrives, never what is claimed."""
    import tracemalloc

    from redis_ckpt.core.frame import FrameAssembler

    blob = bytearray(frame(encode_state({"note": "x", "blob": LONG[0]})))
    size = len(blob)
    if forged == "frame size":
        size = 1 << 40
    else:
        at = bytes(blob).index(b"\xc6" + len(LONG[0]).to_bytes(4, "big"))
        blob[at + 1:at + 5] = b"\xff\xff\xff\xff"
    tracemalloc.start()
    try:
        assembler = FrameAssembler(size)
        for at in range(0, len(blob), 65536):
            assembler.write(bytes(blob[at:at + 65536]))
        got = assembler.finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(got) == len(blob) != size or forged == "bin length"  # the store's read: TRUNCATED
    assert peak < 3 * len(blob)
    if forged == "bin length":
        with pytest.raises(FrameError):
            decode_frame(got)
