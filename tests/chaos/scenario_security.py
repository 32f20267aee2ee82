"""Security: a least-privilege ACL user, TLS, no secrets in messages, no code from the store.

:data:`ACL_COMMANDS` is the exact command set the store needs (documented in
docs/RELIABILITY.md as one ``ACL SETUSER`` line): :func:`acl_minimal` shows the whole store
works with it, and that without any one of them some operation fails. The LangGraph saver
needs :data:`SAVER_COMMANDS` on top (a second documented line), shown the same way.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

from chaos_tools import FaultProxy, Tally, make_self_signed_cert, server_tls_support

from redis.exceptions import ResponseError

from redis_ckpt import CheckpointError, CheckpointStore, StoreUnavailableError

#: how a missing permission shows: NOPERM from a command or a script, or the probe refusing
REFUSED = (ResponseError, CheckpointError)

#: every command the store sends, directly or from its Lua scripts (ACL checks both)
ACL_COMMANDS = (
    # the startup probe
    "info", "config|get", "set", "waitaof",
    # scripts: EVALSHA, and SCRIPT LOAD when the server does not have them yet
    "evalsha", "script|load",
    # large states: the chunks of a frame are staged in one MULTI/EXEC
    "multi", "exec",
    # reads: load, generations, info, events, runs; usage
    "get", "hgetall", "pttl", "xrevrange", "xrange", "scan", "memory|usage",
    # what the scripts call (PEXPIREAT: under a retention, acquire, commit and finish)
    "hget", "hmget", "hset", "hdel", "incr", "del", "pexpire", "rename", "persist", "exists", "time", "xadd",
    "pexpireat",
)


#: what the LangGraph saver sends on top of ACL_COMMANDS (its keys, the threads' and the
#: cross-thread run indexes ``<namespace>:lgrun:{...}``, are all under ``<namespace>:*``)
SAVER_COMMANDS = (
    # the scripts: a thread's checkpoint index and its runs (sorted sets), claims, TTL'd threads
    "zadd", "zrange", "zrangebylex", "zrevrangebylex", "zrem", "hsetnx", "hexists", "hkeys", "pexpiretime",
    # the cross-thread index of a LangGraph run (a set), kept and emptied by put and delete_for_runs
    "sadd", "srem", "sunion", "smove",
)


def acl_rules(namespace: str, password: str, commands: tuple[str, ...] = ACL_COMMANDS) -> list[str]:
    return ["on", f">{password}", "resetchannels", f"~{namespace}:*", "-@all", *(f"+{c}" for c in commands)]


def acl_line(namespace: str = "jobs", user: str = "ckpt", password: str = "<password>",
             commands: tuple[str, ...] = ACL_COMMANDS) -> str:
    return "ACL SETUSER " + " ".join([user, "reset", *acl_rules(namespace, password, commands)])


def workflow(url: str, namespace: str) -> None:
    """Every store operation once: probe, acquire, commits (one chunked), renew, a fallback
    load, generations, info, usage, events (both ways), runs, fork, export, release, revoke,
    delete, import, prune; an acquire and a commit under a retention, and a finish."""
    store = CheckpointStore.from_url(url, namespace=namespace, chunk_bytes=1024)
    try:
        lease = store.acquire("r", owner="acl", ttl=30)
        lease.commit({"x": 1})
        assert store.fork("r", "f") == 1
        kept = store.acquire("f", owner="acl", ttl=30, retention=600)
        assert kept.commit({"x": 2}, retention=600) == 2
        kept.finish(keep_for=600)
        lease.renew()
        lease.commit({"big": b"x" * 5000})
        lease.commit(3)
        lease.commit(4)
        store.client.set(f"{namespace}:{{r}}:g:4", b"damaged")
        ck = store.load("r")
        assert ck is not None and ck.generation == 3 and ck.skipped, ck
        assert [g.ok for g in store.generations("r")] == [False, True, True]
        assert store.info("r").generation == 4
        events = store.events("r")
        assert store.events("r", after=events[0].id)
        assert store.usage("r").keys > 0
        assert store.runs() == ["f", "r"]
        frame = store.export_frame("r")
        lease.release()
        store.revoke("r")
        store.delete("r")
        assert store.import_frame(frame) == 3
        time.sleep(0.01)
        assert [p.run_id for p in store.prune(idle=0.001)] == ["r"]  # f is kept for 600 s by itself
    finally:
        store.close()


def saver_workflow(url: str, namespace: str) -> None:
    """Every LangGraph saver operation once: put (two LangGraph runs, a child namespace),
    put_writes, get_tuple, list (a thread, every thread), copy_thread, prune, delete_for_runs,
    delete_thread; then a thread under a TTL: put, a refreshing read, put_writes, delete."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

    from redis_ckpt.langgraph import RedisCkptSaver

    def cfg(thread: str, cid: str | None = None, ns: str = "") -> dict[str, Any]:
        return {"configurable": {"thread_id": thread, "checkpoint_ns": ns,
                                 **({"checkpoint_id": cid} if cid else {})}}

    def put(saver: Any, thread: str, parent: str | None, step: int, run: str, ns: str = "") -> str:
        """Channel x changes at each step; channel b keeps the value of step 1 (stored once)."""
        cp = generate_checkpoint(channel_values={"x": step, "b": "kept"}, channel_versions={"x": step, "b": 1})
        saver.put(cfg(thread, parent, ns), cp, {"step": step, "run_id": run}, {"x": step, "b": 1}
                  if step == 1 else {"x": step})
        return cp["id"]

    store = CheckpointStore.from_url(url, namespace=namespace)
    try:
        saver = RedisCkptSaver(store)
        first = put(saver, "t", None, 1, "run-1")
        saver.put_writes(cfg("t", first), [("x", "w")], "task")
        second = put(saver, "t", first, 2, "run-2")
        put(saver, "t", None, 1, "run-1", ns="child:1")
        assert saver.get_tuple(cfg("t")).checkpoint["channel_values"] == {"x": 2, "b": "kept"}
        assert [c.checkpoint["id"] for c in saver.list(cfg("t"))] == [second, first]
        saver.copy_thread("t", "t-copy")
        assert {c.config["configurable"]["thread_id"] for c in saver.list(None)} == {"t", "t-copy"}
        saver.prune(["t"], strategy="keep_latest")
        assert [c.checkpoint["id"] for c in saver.list(cfg("t"))] == [second]
        saver.delete_for_runs(["run-1"])
        assert saver.get_tuple(cfg("t-copy", first)) is None
        saver.delete_thread("t")
        saver.delete_thread("t-copy")
        assert saver.get_tuple(cfg("t")) is None
        ttl = RedisCkptSaver(store, thread_ttl={"default_ttl": 10, "refresh_on_read": True})
        cid = put(ttl, "e", None, 1, "run-3")
        assert ttl.get_tuple(cfg("e")).checkpoint["id"] == cid
        ttl.put_writes(cfg("e", cid), [("x", "w")], "task")
        put(ttl, "e", cid, 2, "run-3")
        assert store.client.pttl(f"{namespace}:lgrun:{{run-3}}") > 0
        ttl.delete_for_runs(["run-3"])
        ttl.delete_thread("e")
    finally:
        store.close()


def acl_minimal(server: Any, *, saver: bool = False) -> Tally:
    """The store works for a user with exactly ACL_COMMANDS; each one is needed. ``saver``:
    the LangGraph saver works for a user with ACL_COMMANDS + SAVER_COMMANDS, and each of
    SAVER_COMMANDS is needed (those of the store's line are shown needed without ``saver``)."""
    t0 = time.monotonic()
    if saver:
        tally = Tally("least-privilege ACL user, LangGraph saver", server.engine)
        base, extra, run = ACL_COMMANDS, SAVER_COMMANDS, saver_workflow
    else:
        tally = Tally("least-privilege ACL user", server.engine)
        base, extra, run = (), ACL_COMMANDS, workflow
    admin = server.client()
    url = f"redis://ckpt:pw@127.0.0.1:{server.port}/0"
    try:
        admin.script_flush()
        admin.execute_command("ACL", "SETUSER", "ckpt", "reset", *acl_rules("acl", "pw", base + extra))
        run(url, "acl")
        tally.rounds = 1
        for command in extra:
            for key in admin.scan_iter(match="acl:*"):
                admin.delete(key)
            admin.script_flush()  # so that SCRIPT LOAD is needed again
            fewer = base + tuple(c for c in extra if c != command)
            admin.execute_command("ACL", "SETUSER", "ckpt", "reset", *acl_rules("acl", "pw", fewer))
            tally.injected += 1
            try:
                run(url, "acl")
            except REFUSED as exc:  # expected: some operation is refused without this command
                tally.detected += 1
                tally.count(f"without +{command}: {type(exc).__name__}")
            else:
                tally.violation(f"+{command} is in the ACL line but nothing needs it")
        # and no key outside the namespace
        admin.execute_command("ACL", "SETUSER", "ckpt", "reset", *acl_rules("acl", "pw", base + extra))
        tally.injected += 1
        try:
            run(url, "other")
        except REFUSED as exc:  # the key pattern ~acl:* refuses another namespace
            tally.detected += 1
            tally.count(f"another namespace: {type(exc).__name__}")
        else:
            tally.violation("the ACL user could write outside its namespace")
    finally:
        admin.execute_command("ACL", "DELUSER", "ckpt")
        admin.close()
    tally.seconds = time.monotonic() - t0
    return tally


def tls_status(binaries: dict[str, str], workdir: Path) -> dict[str, tuple[bool, str]]:
    """engine -> (built with TLS?, how we know)."""
    cert, key = make_self_signed_cert(workdir)
    return {engine: server_tls_support(binary, workdir, cert, key) for engine, binary in binaries.items()}


def tls_roundtrip(server: Any, workdir: Path) -> Tally:
    """The whole store over ``rediss://`` with a self-signed certificate made now.

    The server wheels are built without TLS, so TLS is terminated by a proxy on loopback in
    front of the server (what stunnel or a managed service's TLS endpoint does); a client that
    does not trust the certificate is refused.
    """
    t0 = time.monotonic()
    tally = Tally("TLS (rediss://, self-signed certificate)", server.engine)
    cert, key = make_self_signed_cert(workdir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    with FaultProxy(server.port, tls=ctx) as proxy:
        url = f"rediss://127.0.0.1:{proxy.port}/0?ssl_ca_certs={cert}"
        workflow(url, "tls")
        tally.rounds = 1
        tally.injected += 1
        try:
            CheckpointStore.from_url(f"rediss://127.0.0.1:{proxy.port}/0", namespace="tls").close()
        except StoreUnavailableError as exc:
            if tally.check("certificate verify failed" in str(exc), f"unclear TLS refusal: {exc}"):
                tally.detected += 1
        else:
            tally.violation("a client without the CA certificate was not refused")
        tally.injected += 1
        try:
            CheckpointStore.from_url(f"redis://127.0.0.1:{proxy.port}/0", namespace="tls").close()
        except StoreUnavailableError:
            tally.detected += 1
        else:
            tally.violation("a plain-text client got through the TLS port")
    tally.seconds = time.monotonic() - t0
    return tally
