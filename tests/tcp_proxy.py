"""A loopback TCP proxy that loses one reply (or one request) on purpose, for resend tests.

    with CutProxy(server.port) as proxy:
        client = redis.Redis(port=proxy.port)
        proxy.arm("lose-reply", sha_of_commit)   # forward the request, swallow its reply
        ... proxy.answered.wait() ...            # the server ran it
        ... let another worker act ...
        proxy.cut()                              # the client sees the connection break

``arm(rule, match)`` applies to the next client->server chunk that contains ``match``:

``"lose-reply"``    forward it; every later server->client byte on that connection is
                    swallowed; ``answered`` is set when the first such byte arrives (the
                    server has run the request)
``"lose-request"``  swallow it and whatever the client sends after it on that connection
                    (the server never sees it); ``answered`` is set at once

The connection stays open (the client waits for its reply) until :meth:`cut`. Every other
connection, and every connection after the rule fired, is a plain pass-through.
"""

from __future__ import annotations

import socket
import threading

__all__ = ["CutProxy"]


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.swallow_replies = False
        self.swallow_requests = False

    def close(self) -> None:
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class CutProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.answered = threading.Event()
        self._rule: str | None = None
        self._match = b""
        self._armed_link: _Link | None = None
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="cut-proxy", daemon=True).start()

    def arm(self, rule: str, match: bytes) -> None:
        if rule not in ("lose-reply", "lose-request"):
            raise ValueError(rule)
        with self._lock:
            self.answered.clear()
            self._rule, self._match, self._armed_link = rule, match, None

    def cut(self) -> None:
        """Close the connection the rule fired on (both sides)."""
        with self._lock:
            link = self._armed_link
        if link is None:
            raise AssertionError("the rule never fired")
        link.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                conn.close()
                continue
            link = _Link(conn, up)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._up, args=(link,), daemon=True).start()
            threading.Thread(target=self._down, args=(link,), daemon=True).start()

    def _up(self, link: _Link) -> None:
        tail = b""
        try:
            while True:
                chunk = link.client.recv(65536)
                if not chunk:
                    break
                seen, tail = tail + chunk, (tail + chunk)[-max(len(self._match), 1):]
                with self._lock:
                    fire = self._rule if self._rule and self._match and self._match in seen else None
                    if fire:
                        self._rule, self._armed_link = None, link
                if fire == "lose-request":
                    link.swallow_requests = True
                    self.answered.set()
                if link.swallow_requests:
                    continue  # the server never sees it; the client waits for a reply
                if fire == "lose-reply":
                    link.swallow_replies = True
                link.upstream.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                link.upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _down(self, link: _Link) -> None:
        try:
            while True:
                chunk = link.upstream.recv(65536)
                if not chunk:
                    break
                if link.swallow_replies:
                    self.answered.set()
                    continue
                link.client.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                link.client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
