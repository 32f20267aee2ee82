"""Every URL form redis-ckpt takes (:mod:`redis_ckpt.urls`): parsed, validated, redacted, its
secrets found. No server."""

from __future__ import annotations

import pytest

from redis_ckpt.urls import (
    parse_cluster_url,
    parse_sentinel_url,
    redact_url,
    url_secrets,
    url_topology,
    validate_url,
)


class TestRedactUrl:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
            ("rediss://user:s3cret@host:6380/1", "rediss://user:***@host:6380/1"),
            ("redis://user@host:6379", "redis://user@host:6379"),
            ("redis://host:6379/0", "redis://host:6379/0"),
            ("redis://:p%40ss@host/0", "redis://:***@host/0"),
            ("redis://:a@b@host/0", "redis://:***@host/0"),
            ("unix://:s3cret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
            ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ],
    )
    def test_redacts(self, url: str, expected: str) -> None:
        assert redact_url(url) == expected


def test_cluster_url_forms():
    c = parse_cluster_url("redis+cluster://h1:7001,h2,[::1]:7003")
    assert c.nodes == [("h1", 7001), ("h2", 6379), ("::1", 7003)]
    c = parse_cluster_url("rediss+cluster://app:s%40cret@h1:7001/?socket_keepalive=true")
    assert c.kwargs["ssl"] is True and c.kwargs["username"] == "app" and c.kwargs["password"] == "s@cret"
    assert c.kwargs["socket_keepalive"] is True and "db" not in c.kwargs
    for bad in ("redis+cluster://h1:7001/1", "redis+cluster://h1:x", "redis+cluster://h1,,h2", "redis://h1"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)
    assert redact_url("redis+cluster://app:s3cret@h1:7001,h2:7002") == "redis+cluster://app:***@h1:7001,h2:7002"
    validate_url("redis+cluster://h1:7001,h2:7002")
    validate_url("redis://h1:6379/0")
    with pytest.raises(ValueError):
        validate_url("redis+cluster://h1:7001/3")
    with pytest.raises(ValueError):
        validate_url("http://h1")


def test_sentinel_url_forms():
    s = parse_sentinel_url("redis+sentinel://:pw@s1:26379,s2,[::1]:26380/mymaster/2?sentinel_password=spw")
    assert s.sentinels == [("s1", 26379), ("s2", 26379), ("::1", 26380)]
    assert s.service_name == "mymaster" and s.kwargs["db"] == 2 and s.kwargs["password"] == "pw"
    assert s.sentinel_kwargs == {"password": "spw"} and "sentinel_password" not in s.kwargs
    t = parse_sentinel_url("rediss+sentinel://s1/mymaster")
    assert t.kwargs["ssl"] is True and t.sentinel_kwargs == {"ssl": True} and t.kwargs["db"] == 0
    for bad in ("redis+sentinel://s1:26379", "redis+sentinel://s1/m/x", "redis+sentinel://s1/m/0/9",
                "redis://s1/m"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)
    url = "redis+sentinel://:pw@s1:26379/m/0?sentinel_password=spw&socket_timeout=2"
    assert redact_url(url) == "redis+sentinel://:***@s1:26379/m/0?sentinel_password=***&socket_timeout=2"


def test_topology_by_scheme() -> None:
    assert url_topology("rediss+cluster://h1") == "cluster"
    assert url_topology("REDIS+SENTINEL://s1/m") == "sentinel"
    assert url_topology("unix:///run/redis.sock") == url_topology("redis://h") == url_topology("h:1") == "single"


@pytest.mark.parametrize(("url", "secrets"), [
    ("redis://:s3cret@h:1/0", ("s3cret",)),
    ("redis://app:p%40ss@h:1/0", ("p%40ss", "p@ss")),
    ("redis+sentinel://:pw@s1/m?sentinel_password=spw&socket_timeout=2", ("spw", "pw")),
    ("redis://h:1/0?password=qs", ("qs",)),
    # redis-py hands any query option to the connection: ?ssl_password= unlocks the TLS key
    ("rediss://h:1/0?ssl_password=kp&ssl_keyfile=/k.pem", ("kp",)),
    ("rediss+cluster://h1:7001?ssl_password=kp", ("kp",)),
    ("redis://user@h:1/0", ()),
    ("redis://[::1:bad@h/0", ("[::1:bad", ":1:bad")),  # unparseable: all of the userinfo is secret
])
def test_url_secrets(url: str, secrets: tuple[str, ...]) -> None:
    assert url_secrets(url) == secrets
    shown = redact_url(url)
    assert not any(s in shown for s in secrets), shown


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0?sokcet_timeout=5", "rediss://127.0.0.1:1/0?client_nam=x",
                                  "unix:///tmp/nothing-here.sock?db=0&foo=bar"])
def test_an_unknown_query_option_is_refused_before_anything_connects(url: str) -> None:
    """redis-py hands every query option it does not know to the connection, which raised
    TypeError at the first command (the CLI: 'a bug in redis-ckpt'): a typo is a bad URL."""
    from redis_ckpt import CheckpointStore

    name = url.rsplit("?", 1)[1].split("&")[-1].split("=")[0]
    with pytest.raises(ValueError, match=f"unknown option '{name}' in the URL"):
        validate_url(url)
    with pytest.raises(ValueError, match=f"unknown option '{name}' in the URL"):
        CheckpointStore.from_url(url, namespace="default")


@pytest.mark.parametrize("url", ["redis://h/0?client_name=a&socket_timeout=3&protocol=3&health_check_interval=2",
                                  "redis://h/0?max_connections=5&socket_keepalive=true&retry_on_timeout=true",
                                  "rediss://h/0?ssl_cert_reqs=none&ssl_check_hostname=false",
                                  "unix:///tmp/x.sock?db=1&password=p", "redis://h/0?password=p&username=u"])
def test_known_query_options_are_accepted(url: str) -> None:
    validate_url(url)


def test_an_unknown_query_option_in_a_sentinel_url_is_refused() -> None:
    """The data nodes' options of a Sentinel URL reach redis-py's connections the same way."""
    with pytest.raises(ValueError, match="unknown option 'sokcet_timeout' in the URL"):
        validate_url("redis+sentinel://127.0.0.1:1/svc/0?sokcet_timeout=5")
    validate_url("redis+sentinel://127.0.0.1:1/svc/0?socket_timeout=5&sentinel_password=x&client_name=a")
    validate_url("rediss+sentinel://127.0.0.1:1/svc?ssl_cert_reqs=none&sentinel_username=u")


def test_an_unknown_query_option_in_a_cluster_url_is_refused() -> None:
    """The single-server and Sentinel URLs refuse an option no client takes (a typo); a
    Cluster URL did not: the sync client dropped it without a word (redis-py keeps only the
    options it knows), the asyncio one raised redis-py's TypeError out of from_url."""
    import asyncio

    from redis_ckpt import CheckpointStore
    from redis_ckpt.aio import AsyncCheckpointStore

    url = "redis+cluster://127.0.0.1:1,127.0.0.1:2?sokcet_timeout=5"
    with pytest.raises(ValueError, match="unknown option 'sokcet_timeout' in the URL"):
        validate_url(url)
    with pytest.raises(ValueError, match="unknown option 'sokcet_timeout' in the URL"):
        CheckpointStore.from_url(url, namespace="default")
    with pytest.raises(ValueError, match="unknown option 'sokcet_timeout' in the URL"):
        asyncio.run(AsyncCheckpointStore.from_url(url, namespace="default"))
    validate_url("redis+cluster://:pw@127.0.0.1:1?socket_timeout=5&client_name=a&max_connections=8")
    validate_url("rediss+cluster://u:pw@127.0.0.1:1?ssl_cert_reqs=none&ssl_check_hostname=false")
