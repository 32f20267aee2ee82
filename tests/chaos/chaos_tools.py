"""Fault-injection tools shared by the chaos tests and ``bench/chaos.py``.

* :class:`Tally` -- what one fault scenario did and found (one row of docs/RELIABILITY.md);
* :class:`FaultProxy` -- a TCP proxy on loopback (optionally terminating TLS) that can cut a
  connection before or after a matching request reached the server, or hold the reply back;
* AOF helpers -- find the incremental AOF through its manifest, locate the last MULTI/EXEC;
* worker processes -- spawn the scripts in ``tests/workers`` and read their ack files.

Nothing here is a test: every function returns facts and the caller decides.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORKERS = ROOT / "tests" / "workers"


# --------------------------------------------------------------------------- results


def rounds(default: int) -> int:
    """Rounds for a chaos test: ``default``, or more with CHAOS_ROUNDS=N in the environment."""
    return max(default, int(os.environ.get("CHAOS_ROUNDS", "0") or 0))


@dataclass
class Tally:
    """The outcome of one fault scenario on one server, as published in docs/RELIABILITY.md.

    ``violations`` are broken promises (a test fails on any); ``gaps`` are known, documented
    places where the store does not (yet) keep a promise (tests mark them xfail strict).
    """

    fault: str
    engine: str
    rounds: int = 0
    acknowledged: int = 0
    lost: int = 0
    injected: int = 0  # corruptions / faults injected that the store must detect
    detected: int = 0
    violations: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def violation(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(text)

    def check(self, ok: bool, text: str) -> bool:
        if not ok:
            self.violation(text)
        return ok

    @property
    def ok(self) -> bool:
        return not self.violations and self.lost == 0 and self.detected >= self.injected

    def summary(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items()))
        return (f"{self.fault} [{self.engine}] rounds={self.rounds} acked={self.acknowledged} lost={self.lost} "
                f"detected={self.detected}/{self.injected} {extra} violations={self.violations[:5]} gaps={self.gaps}")

    def as_dict(self) -> dict[str, Any]:
        return {"fault": self.fault, "engine": self.engine, "rounds": self.rounds,
                "acknowledged": self.acknowledged, "lost": self.lost, "injected": self.injected,
                "detected": self.detected, "violations": self.violations, "gaps": self.gaps,
                "notes": self.notes, "counters": self.counters, "seconds": round(self.seconds, 1)}


# --------------------------------------------------------------------------- a fault proxy


class FaultProxy:
    """A loopback TCP proxy in front of a server, run on its own asyncio thread.

    ``arm(rule, match)`` makes the next client->server chunk containing ``match`` trigger:

    ``"cut-before"``  close both sides without forwarding the chunk (the server never saw it)
    ``"cut-after"``   forward it, wait for the server's first reply bytes, drop them and close
                      both sides (the server applied it; the client never learns)
    ``"hold"``        forward it and hold back every reply on that connection until
                      :meth:`release` (for killing a client between its write and the reply)

    A rule fires once. ``triggered`` is set when it fired (for ``cut-after``/``hold``: once
    the server has answered, i.e. the request was applied). With ``tls`` (an
    ``ssl.SSLContext`` for the server side) the proxy terminates TLS: clients speak
    ``rediss://`` to it and it speaks plain RESP to the server.
    """

    def __init__(self, upstream_port: int, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.tls = tls
        self.host = host
        self.port = 0
        self.rule: str | None = None
        self.match = b""
        self.triggered = threading.Event()
        self.fired = 0
        self.connections = 0
        self._held = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")

    # -- control (any thread)

    def arm(self, rule: str, match: bytes) -> None:
        if rule not in ("cut-before", "cut-after", "hold"):
            raise ValueError(rule)
        self.triggered.clear()
        self._held.clear()
        self.match, self.rule = match, rule

    def release(self) -> None:
        self._held.set()

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, self.host, 0, ssl=self.tls)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            ureader, uwriter = await asyncio.open_connection(*self.upstream)
        except OSError:
            cwriter.transport.abort()
            return
        self._writers |= {cwriter, uwriter}
        state = {"cut_on_reply": False, "hold": False}

        def abort() -> None:
            cwriter.transport.abort()
            uwriter.transport.abort()

        async def up() -> None:
            tail = b""
            while True:
                chunk = await creader.read(65536)
                if not chunk:
                    break
                seen = tail + chunk
                tail = seen[-max(len(self.match), 1):]
                rule = self.rule
                if rule is not None and self.match and self.match in seen:
                    self.rule = None
                    self.fired += 1
                    if rule == "cut-before":
                        self.triggered.set()
                        abort()
                        return
                    state["cut_on_reply" if rule == "cut-after" else "hold"] = True
                uwriter.write(chunk)
                await uwriter.drain()
            uwriter.transport.abort()

        async def down() -> None:
            held: list[bytes] = []
            while True:
                chunk = await ureader.read(65536)
                if not chunk:
                    break
                if state["cut_on_reply"]:
                    self.triggered.set()
                    abort()
                    return
                if state["hold"]:
                    held.append(chunk)
                    self.triggered.set()
                    while not self._held.is_set():
                        await asyncio.sleep(0.01)
                        if cwriter.transport.is_closing():
                            abort()
                            return
                    state["hold"] = False
                    chunk, held = b"".join(held), []
                cwriter.write(chunk)
                await cwriter.drain()
            cwriter.transport.abort()

        try:
            await asyncio.gather(up(), down())
        except (ConnectionError, ssl.SSLError, OSError):
            abort()  # a side went away: the other goes too, as a real network cut would
        finally:
            self._writers -= {cwriter, uwriter}


# --------------------------------------------------------------------------- TLS material


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """(cert, key) PEM files for CN/SAN 127.0.0.1, made now with the ``cryptography`` package
    if it is installed, else with the openssl command line. RuntimeError if neither exists."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        openssl = "openssl"
        try:
            subprocess.run(
                [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                 "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True, timeout=60,
            )
        except FileNotFoundError as exc:
            raise RuntimeError("neither the cryptography package nor the openssl CLI is available") from exc
        return cert, key
    return _cert_with_cryptography(cert, key)


def _cert_with_cryptography(cert: Path, key: Path) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


def server_tls_support(binary: str, workdir: Path, cert: Path, key: Path) -> tuple[bool, str]:
    """Whether ``binary`` was built with TLS: start it briefly with ``--tls-port``."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--bind", "127.0.0.1", "--dir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out, _ = proc.communicate(timeout=1.5)
    except subprocess.TimeoutExpired:  # it is serving: TLS works
        proc.kill()
        proc.communicate()
        return True, "listens on --tls-port"
    reason = next((line.split("# ", 1)[-1] for line in out.splitlines() if "TLS" in line), out.strip()[-200:])
    return False, reason


# --------------------------------------------------------------------------- AOF


def incr_aof(data_dir: Path) -> Path:
    """The incremental AOF file the manifest names last (``appendonlydir/*.incr.aof``)."""
    adir = data_dir / "appendonlydir"
    manifests = list(adir.glob("*.manifest"))
    if len(manifests) != 1:
        raise FileNotFoundError(f"expected one AOF manifest in {adir}, found {manifests}")
    incr = []
    for line in manifests[0].read_text().splitlines():  # "file NAME seq N type i [startoffset N]"
        words = line.split()
        fields = dict(zip(words[0::2], words[1::2]))
        if fields.get("type") == "i" and "file" in fields:
            incr.append(fields["file"])
    if not incr:
        raise FileNotFoundError(f"the manifest {manifests[0]} names no incremental file")
    return adir / incr[-1]


def complete_prefix(data: bytes) -> int:
    """How many leading bytes of AOF ``data`` hold whole commands and whole MULTI ... EXEC
    blocks: what ``valkey-check-aof --fix`` keeps of a torn tail."""
    pos = good = 0
    in_multi = False
    while pos < len(data):
        line_end = data.find(b"\r\n", pos)
        if data[pos:pos + 1] != b"*" or line_end < 0:
            break
        at, name = line_end + 2, None
        for _ in range(int(data[pos + 1:line_end])):
            head_end = data.find(b"\r\n", at)
            if data[at:at + 1] != b"$" or head_end < 0:
                return good
            n = int(data[at + 1:head_end])
            if head_end + 2 + n + 2 > len(data):
                return good  # torn inside this argument
            if name is None:
                name = data[head_end + 2:head_end + 2 + n].upper()
            at = head_end + 2 + n + 2
        pos = at
        if name == b"MULTI":
            in_multi = True
        elif name == b"EXEC":
            in_multi = False
        if not in_multi:
            good = pos
    return good


def restart_repairing_a_torn_tail(server: Any) -> int:
    """``server.restart()`` after a kill -9; when the server refuses its AOF because the tail
    is torn (a write the kill cut short: with appendfsync always, never an acknowledged one),
    the operator's repair first, as ``valkey-check-aof --fix`` does it: drop the incomplete
    command or transaction. The number of bytes dropped (0: none was needed)."""
    from redis_ckpt.testing.processes import ServerStartError

    try:
        server.restart()
        return 0
    except ServerStartError as refused:
        if "Unexpected end of file" not in str(refused):
            raise
    dropped = repair_torn_tail(server.data_dir)
    server.restart()
    return dropped


def repair_torn_tail(data_dir: Path) -> int:
    """The operator's repair of a torn AOF (``valkey-check-aof --fix``): cut the incremental
    file to :func:`complete_prefix`; the number of bytes dropped."""
    aof = incr_aof(data_dir)
    data = aof.read_bytes()
    keep = complete_prefix(data)
    aof.write_bytes(data[:keep])
    return len(data) - keep


MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"


def last_transaction(data: bytes) -> tuple[int, int]:
    """(start, end) of the last MULTI ... EXEC block in AOF bytes (end is after EXEC)."""
    start = data.rfind(MULTI)
    end = data.find(EXEC, start)
    if start < 0 or end < 0:
        raise ValueError("no MULTI/EXEC block in the AOF")
    return start, end + len(EXEC)


# --------------------------------------------------------------------------- workers


class Worker(subprocess.Popen):  # type: ignore[type-arg]
    """A worker process whose stderr goes to a file (no pipe to fill up or leave open)."""

    err_path: Path

    def stderr_tail(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return ""


def spawn(script: str, *args: Any, stderr: Path) -> Worker:
    """Start ``tests/workers/<script>.py`` with string args; its stderr goes to ``stderr``."""
    with open(stderr, "ab") as err:
        proc = Worker(
            [sys.executable, str(WORKERS / f"{script}.py"), *map(str, args)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    proc.err_path = stderr
    return proc


def read_lines(path: Path) -> list[list[str]]:
    """Whole lines of a worker's log (a line being written is ignored)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return [line.split() for line in lines[:-1] if line.strip()]


def finish(procs: Sequence[Worker], timeout: float = 20) -> list[tuple[int, str]]:
    """SIGTERM every worker still running, then (returncode, stderr tail) of each."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
    out = []
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        out.append((p.returncode, p.stderr_tail()))
    return out


@contextmanager
def stopped(procs: Sequence[Worker]) -> Iterator[None]:
    """SIGSTOP the workers for the duration (a consistent view to verify), then SIGCONT."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for p in live:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)


def need_server(engine: str, **kw: Any) -> Any:
    """A started LocalServer; skips the test locally, fails it in CI, when none can be had."""
    from redis_ckpt.testing import ServerFactory, server_unavailable

    return ServerFactory(server_unavailable).start(engine, **kw)
