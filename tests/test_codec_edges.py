"""Codec edges found in review: each test failed before its fix."""

from __future__ import annotations

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
