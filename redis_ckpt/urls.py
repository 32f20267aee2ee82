"""Every URL form redis-ckpt takes, in one place: parse, validate; redact and find the secrets
(:mod:`redis_ckpt.url_secrets`, whose names this module re-exports).

Nothing here connects (the clients are built in :mod:`redis_ckpt.drivers.clients`); the only
piece of redis-py used is its own URL parser, so a URL means what redis-py makes of it.

URLs (a password in any of them is shown as ``***``)::

    redis://[[user]:password@]host[:port][/db][?option=value...]     one server
    rediss://...                                                     one server, TLS
    unix://[[user]:password@]/path/to/socket[?db=N]                  one server, Unix socket
    redis+cluster://[[user]:password@]host[:port][,host[:port]...][?option=value...]
    rediss+cluster://...                                             Redis Cluster (TLS)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db][?option=value...]
    rediss+sentinel://...                                            Sentinel (TLS)

Cluster: any reachable nodes seed the slot map (default port 6379); the database is always 0.
Sentinel: the hosts are the Sentinels (default port 26379); ``user``/``password`` and the
options are the data nodes'; the Sentinels' own credentials are the options
``sentinel_username`` / ``sentinel_password``. ``rediss+sentinel`` uses TLS to both.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis.connection import Connection, ConnectionPool, SSLConnection, parse_url

from .url_secrets import (PERCENT_ENCODE_QUERY_PASSWORD, SECRET_PARAMS, password_needs_encoding, raw_password,
                          redact_url, refuse_split_secret, url_secrets)

__all__ = [
    "CLUSTER_SCHEMES",
    "SENTINEL_SCHEMES",
    "CLUSTER_DEFAULT_PORT",
    "SENTINEL_DEFAULT_PORT",
    "SECRET_PARAMS",
    "ClusterURL",
    "SentinelURL",
    "parse_cluster_url",
    "parse_sentinel_url",
    "url_topology",
    "validate_url",
    "check_single_url",
    "redact_url",
    "url_secrets",
    "password_needs_encoding",
    "PERCENT_ENCODE_PASSWORD",
    "PERCENT_ENCODE_QUERY_PASSWORD",
    "hostport",
    "raw_password",
]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_DEFAULT_PORT = 6379
SENTINEL_DEFAULT_PORT = 26379

#: the error for a URL that does not parse because its password holds an unencoded '#', '?' or '/'
PERCENT_ENCODE_PASSWORD = ("cannot parse the URL: percent-encode a '#', '?', '/' or '@' in the password "
                           "(%23, %3F, %2F, %40)")

F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- which form


def url_topology(url: str) -> str:
    """``"cluster"``, ``"sentinel"`` or ``"single"`` for a URL (by scheme only)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in CLUSTER_SCHEMES:
        return "cluster"
    if scheme in SENTINEL_SCHEMES:
        return "sentinel"
    return "single"


def validate_url(url: str) -> None:
    """Raise ``ValueError`` for a URL none of the forms above accepts (nothing is connected)."""
    kind = url_topology(url)
    if kind == "cluster":
        parse_cluster_url(url)
    elif kind == "sentinel":
        parse_sentinel_url(url)
    else:
        check_single_url(url)


def hostport(host: str, port: Any) -> str:
    """``host:port``, or ``[host]:port`` for an IPv6 address."""
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


# --------------------------------------------------------------------------- parse


def _unquotable(parse: F) -> F:
    """``parse(url)``, whose ``ValueError`` never quotes a piece of the password: when the
    password holds an unencoded ``#``, ``?`` or ``/`` the parsers take its pieces for a port,
    a path or a query and say so; then the error only says what to do."""
    @functools.wraps(parse)
    def wrapper(url: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return parse(url, *args, **kwargs)
        except ValueError:
            if password_needs_encoding(url):
                raise ValueError(PERCENT_ENCODE_PASSWORD) from None
            raise
    return wrapper  # type: ignore[return-value]


@functools.lru_cache(maxsize=None)
def _options_of(cls: type) -> frozenset[str]:
    """The keyword arguments ``cls(...)`` takes, through the ``**kwargs`` its ``__init__``
    hands on to its bases' (redis-py's connections do)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return frozenset(names)


def _refuse_unknown_options(options: dict[str, Any], connection_class: type | None = None) -> None:
    """redis-py hands every query option of a one-server (or a Sentinel's data node) URL to
    its pool and connections, and one neither takes failed as a TypeError at the first
    command: refused here."""
    cls = connection_class or options.get("connection_class", Connection)
    known = _options_of(cls) | _options_of(ConnectionPool)
    for name in options:
        if name not in known:
            raise ValueError(f"unknown option {name!r} in the URL's query (not an option of a redis-py "
                             "connection: a typo?)")


@functools.lru_cache(maxsize=None)
def _cluster_options() -> frozenset[str]:
    """The keyword arguments a redis-py Cluster client takes, sync or asyncio: their own and
    the connection options the sync one hands on to its nodes (``REDIS_ALLOWED_KEYS``; it
    drops any other without a word, the asyncio one raises TypeError)."""
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import REDIS_ALLOWED_KEYS, RedisCluster

    names = set(REDIS_ALLOWED_KEYS)
    for cls in (RedisCluster, AsyncRedisCluster):
        names.update(inspect.signature(cls.__init__).parameters)
    return frozenset(names)


@_unquotable
def check_single_url(url: str) -> None:
    """redis-py's own parse, plus what it lets through: ``redis://host/foo`` (and ``/1/2``)
    silently meant database 0 (or 12); a database is a number or nothing; an option that
    no redis-py connection takes is refused (it failed at the first command)."""
    refuse_split_secret(url)
    _refuse_unknown_options(parse_url(url))
    parts = urlsplit(url)
    if parts.scheme.lower() in ("redis", "rediss") and parts.path not in ("", "/"):
        if not re.fullmatch(r"/[0-9]+", parts.path):
            raise ValueError(f"the database in the URL must be a number (redis://host:port/0), "
                             f"got {unquote(parts.path[1:])!r}")


def _split_hosts(netloc: str, default_port: int, url_kind: str) -> tuple[str, list[tuple[str, int]]]:
    userinfo, at, hostlist = netloc.rpartition("@")
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"a {url_kind} URL needs host[:port] entries separated by commas")
        if item.startswith("["):  # [IPv6] or [IPv6]:port, nothing else after the ']'
            host, closed, rest = item[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise ValueError(f"a {url_kind} URL has a bad host entry {item!r} "
                                 "(an IPv6 address is [address] or [address]:port)")
            colon, port = rest[:1], rest[1:]
        else:
            host, colon, port = item.partition(":")
        if not host:
            raise ValueError(f"a {url_kind} URL has an empty host in {item!r}")
        # ASCII digits only: int() would also take ' 12', '1_000' or other scripts' digits
        if colon and not re.fullmatch(r"[0-9]+", port):
            raise ValueError(f"a {url_kind} URL has a bad port in {item!r}")
        hosts.append((unquote(host), int(port) if colon else default_port))
    return (userinfo if at else ""), hosts


def _node_kwargs(base_scheme: str, userinfo: str, host: tuple[str, int], path: str, query: str) -> dict[str, Any]:
    """redis-py's own parse of ``<base_scheme>://userinfo@host/path?query``, minus host/port."""
    auth = f"{userinfo}@" if userinfo else ""
    kw = parse_url(f"{base_scheme}://{auth}{hostport(*host)}{path}{'?' + query if query else ''}")
    kw.pop("host", None)
    kw.pop("port", None)
    cls = kw.pop("connection_class", None)
    if cls is not None and "SSL" in cls.__name__:
        kw["ssl"] = True
    return kw


@dataclass(frozen=True)
class ClusterURL:
    nodes: list[tuple[str, int]]
    kwargs: dict[str, Any]  # for RedisCluster(...): username, password, ssl, options


@dataclass(frozen=True)
class SentinelURL:
    sentinels: list[tuple[str, int]]
    service_name: str
    kwargs: dict[str, Any]  # for master_for(...): db, username, password, ssl, options
    sentinel_kwargs: dict[str, Any]  # for the Sentinel connections


def _scheme(url: str, schemes: tuple[str, ...], what: str) -> tuple[Any, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise ValueError(f"not a {what} URL (expected {' or '.join(s + '://' for s in schemes)})")
    return parts, scheme


@_unquotable
def parse_cluster_url(url: str) -> ClusterURL:
    """``redis+cluster://[[user]:password@]host[:port][,host[:port]...][?options]``."""
    parts, scheme = _scheme(url, CLUSTER_SCHEMES, "cluster")
    refuse_split_secret(url)
    userinfo, hosts = _split_hosts(parts.netloc, CLUSTER_DEFAULT_PORT, "cluster")
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a Redis Cluster has only database 0: drop the path from the cluster URL")
    kw = _node_kwargs(scheme.split("+", 1)[0], userinfo, hosts[0], "", parts.query)
    if kw.pop("db", 0) not in (0, "0"):
        raise ValueError("a Redis Cluster has only database 0")
    for name in kw:
        if name not in _cluster_options():
            raise ValueError(f"unknown option {name!r} in the URL's query (not an option of a redis-py "
                             "Cluster client: a typo?)")
    return ClusterURL(hosts, kw)


@_unquotable
def parse_sentinel_url(url: str) -> SentinelURL:
    """``redis+sentinel://[[user]:password@]host[:port][,...]/service_name[/db][?options]``."""
    parts, scheme = _scheme(url, SENTINEL_SCHEMES, "Sentinel")
    refuse_split_secret(url)
    userinfo, hosts = _split_hosts(parts.netloc, SENTINEL_DEFAULT_PORT, "Sentinel")
    segments = [s for s in parts.path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError("a Sentinel URL names the service: redis+sentinel://host:port[,host:port]/service_name[/db]")
    service = unquote(segments[0])
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"the database in a Sentinel URL must be a number, got {db!r}")
    sentinel_kwargs: dict[str, Any] = {}
    rest = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k in ("sentinel_username", "sentinel_password"):
            sentinel_kwargs[k.split("_", 1)[1]] = v
        else:
            rest.append((k, v))
    base = scheme.split("+", 1)[0]
    kw = _node_kwargs(base, userinfo, hosts[0], f"/{db}", urlencode(rest))
    _refuse_unknown_options({k: v for k, v in kw.items() if k != "ssl"},  # ssl: master_for's own
                            SSLConnection if kw.get("ssl") else Connection)
    if kw.get("ssl"):
        sentinel_kwargs["ssl"] = True
    return SentinelURL(hosts, service, kw, sentinel_kwargs)
