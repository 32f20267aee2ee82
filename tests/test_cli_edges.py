"""Edges of the ``redis-ckpt`` CLI found in review: a password holding an unencoded '#', '?'
or '/', strict JSON, malformed host entries, a silent cluster primary, prune's confirmation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_cli import invoke  # one way to run the CLI in the tests: never a traceback

from redis_ckpt.urls import redact_url, url_secrets, validate_url


# --------------------------------------------------------------------------- 1. passwords with '#?/'

PIECES = ("s3cr", "xq9z")  # the password is s3cr<delimiter>xq9z: neither half may ever be shown
FORMS = [  # (url with {auth} before '@', what it shows as)
    ("redis://{auth}@127.0.0.1:1/0", "redis://{user}:***@127.0.0.1:1/0"),
    ("rediss://{auth}@127.0.0.1:1/0", "rediss://{user}:***@127.0.0.1:1/0"),
    ("redis+cluster://{auth}@127.0.0.1:1", "redis+cluster://{user}:***@127.0.0.1:1"),
    ("rediss+cluster://{auth}@127.0.0.1:1,127.0.0.1:2", "rediss+cluster://{user}:***@127.0.0.1:1,127.0.0.1:2"),
    ("redis+sentinel://{auth}@127.0.0.1:1/svc", "redis+sentinel://{user}:***@127.0.0.1:1/svc"),
    ("rediss+sentinel://{auth}@127.0.0.1:1/svc/0", "rediss+sentinel://{user}:***@127.0.0.1:1/svc/0"),
]
CASES = [(form.format(auth=f"{user}:s3cr{d}xq9z"), shown.format(user=user))
         for form, shown in FORMS for user in ("", "app") for d in "#?/"]


@pytest.mark.parametrize(("url", "shown"), CASES)
def test_a_password_with_a_url_delimiter_is_redacted_whole(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    secrets = url_secrets(url)
    assert all(p in secrets for p in PIECES) and url.split("@")[0].split(":", 2)[-1] in secrets
    with pytest.raises(ValueError) as bad:
        validate_url(url)
    assert not any(p in str(bad.value) for p in PIECES) and "percent-encode" in str(bad.value)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(("url", "shown"), CASES)
def test_a_bad_url_never_prints_any_part_of_its_password(url: str, shown: str, as_json: bool) -> None:
    result = invoke(["runs", "--url", url, "--timeout", "1", *(["--json"] if as_json else [])])
    assert result.exit_code == 2
    assert not any(p in result.output for p in PIECES), result.output
    [line] = result.stderr.splitlines()
    message = json.loads(line)["error"] if as_json else line.removeprefix("error: ")
    assert message.startswith(f"bad --url {shown}: ") and "percent-encode" in message, message


def test_a_password_with_a_delimiter_that_still_parses_is_never_shown() -> None:
    # redis-py reads ':4242' as the port and the rest as a query: nothing listens there
    result = invoke(["runs", "--url", "redis://:4242?xq9z@127.0.0.1/0", "--timeout", "1"])
    assert result.exit_code == 2
    assert "4242" not in result.output and "xq9z" not in result.output, result.output
    assert "redis://:***@127.0.0.1/0" in result.stderr  # the redacted URL is not scrubbed into '***7.0.0.1'


def test_the_raw_userinfo_rules() -> None:
    assert redact_url("redis://h:1/0?password=s3cr#xq9z") == "redis://h:1/0?password=***#***"
    assert redact_url("redis://u:a@b/c@h:1/0") == "redis://u:***@h:1/0"
    assert url_secrets("redis://u:a@b/c@h:1/0")[0] == "a@b/c"
    assert url_secrets("redis://user@h:1/0") == () and redact_url("redis://user@h:1/0") == "redis://user@h:1/0"


# --------------------------------------------------------------------------- 2. strict JSON


def _strict(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


def test_show_json_tags_nan_and_infinite_metadata(store, durable_server, namespace) -> None:
    lease = store.acquire("m", ttl=60)
    store.commit("m", {"x": 1}, token=lease.token, expected_generation=0,
                 metadata={"loss": float("nan"), "best": float("inf"), "worst": [float("-inf"), 1.5]})
    for extra in ([], ["--state"]):
        result = invoke(["show", "m", *extra, "--json", "--url", durable_server.url, "--namespace", namespace])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout, parse_constant=_strict)
        meta = data["metadata"] if extra else data["generations"][0]["metadata"]
        assert meta == {"loss": {"$float": "nan"}, "best": {"$float": "inf"},
                        "worst": [{"$float": "-inf"}, 1.5]}, data


def test_json_output_refuses_a_non_finite_number_loudly() -> None:
    from redis_ckpt.cli import render

    with pytest.raises(ValueError):
        render.emit_json({"x": float("nan")})


# --------------------------------------------------------------------------- 3. host entries


@pytest.mark.parametrize("url", [
    "redis+cluster://[::1]x:7000", "redis+cluster://[::1]7000", "redis+cluster://[::1", "redis+cluster://[::1]:",
    "redis+cluster://[::1]:70x", "redis+cluster://h1: 12", "redis+cluster://h1:1_000", "redis+cluster://h1:",
    "redis+cluster://h1:\\u0661\\u0662".encode().decode("unicode_escape"), "redis+cluster://h1:+12",
    "redis+sentinel://[::1]26379/svc", "redis+sentinel://[::1]x:26379/svc", "redis+sentinel://s1:2_6379/svc",
    "redis+sentinel://s1,[::1]:\\u0661/svc".encode().decode("unicode_escape"),
])
def test_a_malformed_host_entry_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="URL has a bad|URL has an empty|Invalid IPv6"):
        validate_url(url)
    result = invoke(["runs", "--url", url, "--timeout", "1"])
    assert result.exit_code == 2 and result.stderr.startswith("error: bad --url"), result.output


def test_well_formed_host_entries_still_parse() -> None:
    from redis_ckpt.urls import parse_cluster_url, parse_sentinel_url

    assert parse_cluster_url("redis+cluster://[::1]:7000,[::1],h1,h2:7002").nodes == [
        ("::1", 7000), ("::1", 6379), ("h1", 6379), ("h2", 7002)]
    assert parse_sentinel_url("redis+sentinel://[::1]:26380,s1/svc").sentinels == [("::1", 26380), ("s1", 26379)]


# --------------------------------------------------------------------------- 4. a silent cluster primary


def test_an_unreachable_cluster_primary_is_unverifiable_not_refused() -> None:
    from redis_ckpt import Durability
    from redis_ckpt.cli.check import _VERDICT_EXIT, verdict
    from redis_ckpt.core.ops import ConnectionLost
    from redis_ckpt.probe.topology import NodeSpec, Topology, probe_plan

    for lost in (ConnectionLost("Timeout reading from 127.0.0.1:7000", timed_out=True, kind="TimeoutError"),
                 ConnectionLost("Connection refused")):
        plan = probe_plan("redis+cluster://127.0.0.1:7000", Topology([NodeSpec("h", "127.0.0.1:7000")]),
                          namespace="ns", durability=Durability(), declared=None)
        next(plan)
        with pytest.raises(StopIteration) as done:
            plan.throw(lost)
        report = done.value.value
        [f] = report.refused
        assert f.check == "reachable" and f.level == "unverifiable" and not report.ok
        assert _VERDICT_EXIT[verdict(report.findings)] == 2


@pytest.mark.server
def test_a_silent_cluster_primary_is_exit_2_for_check_and_for_a_store_command(cluster, namespace) -> None:
    import os
    import signal

    url = cluster.url(2)
    seeds = {s.port for s in cluster.servers[:2]}

    def while_silent(args: list[str]) -> Any:
        # a short window: its replica takes over ~2 s after it stops (NODE_TIMEOUT_MS 1000)
        silent = next(p for p in cluster.primaries() if p.port not in seeds)
        os.kill(silent.pid, signal.SIGSTOP)
        try:
            result = invoke([*args, "--url", url, "--timeout", "0.5"])
        finally:
            os.kill(silent.pid, signal.SIGCONT)
        cluster.wait_healthy(60)
        assert f"127.0.0.1:{silent.port}" in result.output, result.output
        return result

    checked = while_silent(["check", "--json"])
    assert checked.exit_code == 2, checked.output
    assert json.loads(checked.stdout)["verdict"] == "unverifiable", checked.stdout
    listed = while_silent(["runs", "--namespace", namespace])  # the store's own startup probe
    assert listed.exit_code == 2, listed.output
    assert "cannot reach this primary" in listed.stderr, listed.stderr


# --------------------------------------------------------------------------- 5. prune asks, --json too


def test_prune_with_json_still_asks_before_removing(store, durable_server, namespace) -> None:
    import time

    lease = store.acquire("job", ttl=0.05)
    store.commit("job", {"a": 1}, token=lease.token, expected_generation=0)
    time.sleep(0.4)
    args = ["prune", "--idle", "250ms", "--json", "--url", durable_server.url, "--namespace", namespace]
    declined = invoke(args, input="n\n")
    assert declined.exit_code == 1 and store.load("job") is not None, declined.output
    assert json.loads(declined.stderr.splitlines()[-1]) == {"error": "aborted", "exit_code": 1}
    assert declined.stdout == ""
    done = invoke([*args, "--yes"])
    assert done.exit_code == 0 and json.loads(done.stdout)["count"] == 1 and store.load("job") is None


# --------------------------------------------------------------------------- 5. '@' and '&' in the query

AT_IN_QUERY = "redis://:xq9zpw@127.0.0.1:1/0?client_name=a@b"
AMP_IN_PASSWORD = "redis://127.0.0.1:1/0?password=s3cr&xq9z"


def test_an_at_sign_in_the_query_hides_only_the_password() -> None:
    assert redact_url(AT_IN_QUERY) == "redis://:***@127.0.0.1:1/0?client_name=a@b"
    assert url_secrets(AT_IN_QUERY) == ("xq9zpw",)
    assert redact_url("unix://:xq9zpw@/run/redis.sock?db=0&client_name=a@b") == \
        "unix://:***@/run/redis.sock?db=0&client_name=a@b"
    # a password holding '@' and '/' is still hidden whole, before a query with an '@' too
    assert redact_url("redis://u:a@b/c@h:1/0?client_name=x@y") == "redis://u:***@h:1/0?client_name=x@y"
    validate_url(AT_IN_QUERY)


def test_an_ampersand_in_a_query_password_is_hidden_and_refused() -> None:
    assert redact_url(AMP_IN_PASSWORD) == "redis://127.0.0.1:1/0?password=***"
    assert redact_url(AMP_IN_PASSWORD + "&db=0") == "redis://127.0.0.1:1/0?password=***&db=0"
    assert all(p in url_secrets(AMP_IN_PASSWORD) for p in PIECES)
    # redis-py would take the password for 's3cr' and drop the rest: a clear error instead
    with pytest.raises(ValueError, match="percent-encode") as bad:
        validate_url(AMP_IN_PASSWORD)
    assert not any(p in str(bad.value) for p in PIECES)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_the_cli_never_prints_a_password_next_to_an_at_or_ampersand_in_the_query(as_json: bool) -> None:
    flags = ["--timeout", "1", *(["--json"] if as_json else [])]
    result = invoke(["runs", "--url", AT_IN_QUERY, *flags])
    assert result.exit_code == 2, result.output
    assert "xq9zpw" not in result.output and "redis://:***@127.0.0.1:1/0?client_name=a@b" in result.stderr, \
        result.output
    result = invoke(["runs", "--url", AMP_IN_PASSWORD, *flags])
    assert result.exit_code == 2, result.output
    assert not any(p in result.output for p in PIECES), result.output
    assert "redis://127.0.0.1:1/0?password=***" in result.stderr and "percent-encode" in result.stderr
    # a short password is not scrubbed out of the message's own words
    result = invoke(["runs", "--url", "redis://127.0.0.1:1/0?password=a&e", *flags])
    assert "bad --url redis://127.0.0.1:1/0?password=***: cannot parse the URL: percent-encode a '&'" \
        in result.stderr, result.stderr
