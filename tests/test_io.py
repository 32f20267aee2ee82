"""The drivers' own RESP packing says exactly what redis-py would say."""

from __future__ import annotations

import os

import pytest
from redis.connection import Connection

from redis_ckpt._io import _pack

CASES = [
    [("SET", "k", b"v")],
    [("EVALSHA", "a" * 40, 2, "ns:{r}:a", "ns:{r}:b", "x\ny\n", os.urandom(70_000), "2:0"), ("WAITAOF", 1, 0, 5000)],
    [("SET", "big", memoryview(os.urandom(30_000))), ("GET", "big")],
    [("XADD", "s", "MAXLEN", "~", 1000, "*", "f", 1.5, "g", "ü")],
    [("PING",)],
]


@pytest.mark.parametrize("commands", CASES)
def test_pack_matches_redis_py(commands):
    ours = b"".join(bytes(p) for p in _pack(commands))
    theirs = b"".join(bytes(p) for p in Connection().pack_commands(commands))
    assert ours == theirs


@pytest.mark.parametrize("bad", [True, None, [1], {"a": 1}])
def test_pack_refuses_what_redis_py_would_not_send(bad):
    with pytest.raises(TypeError):
        _pack([("SET", "k", bad)])


def test_large_arguments_are_not_copied():
    big = memoryview(os.urandom(100_000))
    parts = _pack([("SET", "k", big)])
    assert any(p is big for p in parts)
