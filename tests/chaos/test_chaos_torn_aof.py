"""A torn AOF tail, cut inside the last transaction, with aof-load-truncated no and yes."""

from __future__ import annotations

import pytest
from chaos_tools import rounds
from scenario_torn import torn_tail_loaded, torn_tail_refused

pytestmark = [pytest.mark.server]


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_torn_tail_with_load_truncated_no_is_refused_and_reported(engine, make_server, seed):
    server = make_server(engine, aof_load_truncated="no")
    tally = torn_tail_refused(server, rounds=rounds(3), seed=seed)
    print(tally.summary())
    assert not tally.violations, tally.violations
    assert tally.lost == 0 and tally.detected == tally.injected == rounds(3)


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_torn_tail_with_load_truncated_yes_never_yields_a_half_applied_commit(engine, make_server, seed):
    server = make_server(engine, aof_load_truncated="yes")
    tally = torn_tail_loaded(server, rounds=rounds(4), seed=seed)
    print(tally.summary(), tally.notes)
    assert not tally.violations, tally.violations
    assert tally.lost == 0 and tally.rounds == rounds(4)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_the_repair_keeps_whole_commands_and_transactions_and_drops_a_torn_tail():
    from chaos_tools import complete_prefix

    whole = _command(b"SET", b"a", b"1") + _command(b"MULTI") + _command(b"SET", b"b", b"2\r\nx") + _command(b"EXEC")
    torn_multi = _command(b"MULTI") + _command(b"SET", b"c", b"3") + _command(b"SET", b"d", b"4")
    assert complete_prefix(whole) == len(whole)
    for cut in range(1, len(torn_multi) + 1):  # torn anywhere inside the last transaction, EXEC never written
        assert complete_prefix(whole + torn_multi[:cut]) == len(whole)
    tail = _command(b"SET", b"e", b"5")
    for cut in range(1, len(tail)):  # torn inside a command outside any transaction
        assert complete_prefix(whole + tail[:cut]) == len(whole)
    assert complete_prefix(whole + tail) == len(whole + tail)


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_a_server_refusing_a_torn_tail_is_repaired_and_keeps_every_whole_transaction(engine, make_server):
    # what the kill -9 scenarios do when a kill cut the last write short (never an acknowledged
    # one: appendfsync always answers after the write and the fsync)
    from chaos_tools import incr_aof, last_transaction, restart_repairing_a_torn_tail

    server = make_server(engine, appendonly="yes", appendfsync="always", aof_load_truncated="no")
    client = server.client()
    for i in range(4):
        p = client.pipeline(transaction=True)
        p.set(f"a{i}", b"x" * 3000)
        p.set(f"b{i}", b"y" * 3000)
        p.execute()
    client.close()
    assert restart_repairing_a_torn_tail(server) == 0  # a clean restart needs no repair
    server.kill()
    aof = incr_aof(server.data_dir)
    data = aof.read_bytes()
    start, end = last_transaction(data)
    aof.write_bytes(data[:start + (end - start) // 2])
    assert restart_repairing_a_torn_tail(server) == (start + (end - start) // 2) - start
    client = server.client()
    assert sorted(client.keys()) == sorted(b"%s%d" % (k, i) for k in (b"a", b"b") for i in range(3))
    client.close()
