"""Library side of first contact (issue #14): errors that say what happened, one default
namespace, readable reprs, URLs that mean what they say."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from redis_ckpt import CheckpointStore, FencedError
from redis_ckpt.aio import AsyncCheckpointStore


# --------------------------------------------------------------------------- 5. errors that mislead


@pytest.mark.server
def test_a_commit_fenced_off_by_a_revoke_says_who_revoked(client: Any, namespace: str) -> None:
    store = CheckpointStore(client, namespace=namespace)
    lease = store.acquire("job", owner="worker-a", ttl=30)
    lease.commit({"n": 1})
    store.revoke("job", by="ops@bastion")
    with pytest.raises(FencedError) as fenced:
        lease.commit({"n": 2})
    err = fenced.value
    assert (err.token, err.fence, err.cause, err.revoked_by) == (1, 2, "revoke", "ops@bastion")
    assert "revoked by 'ops@bastion'" in str(err) and "newer worker" not in str(err)
    assert store.load("job").state == {"n": 1}
    # the raw CAS says the same
    with pytest.raises(FencedError) as raw:
        store.commit("job", {"n": 3}, token=1, expected_generation=1)
    assert raw.value.revoked_by == "ops@bastion"


@pytest.mark.server
def test_a_commit_fenced_off_by_a_takeover_names_the_new_holder(client: Any, namespace: str) -> None:
    store = CheckpointStore(client, namespace=namespace)
    old = store.acquire("job", owner="worker-a", ttl=0.05)
    old.commit({"n": 1})
    import time

    time.sleep(0.1)
    new = store.acquire("job", owner="worker-b", ttl=30)
    for i in range(5):
        new.commit({"n": 2 + i})
    with pytest.raises(FencedError) as fenced:
        old.commit({"n": 99})
    err = fenced.value
    assert (err.cause, err.by, err.revoked_by, err.fence) == ("takeover", "worker-b", None, 2)
    assert "'worker-b' acquired the run with token 2" in str(err)
    # a delete raises the fence too, and says so
    store.delete("job", by="janitor")
    with pytest.raises(FencedError) as deleted:
        new.commit({"n": 100})
    assert (deleted.value.cause, deleted.value.by) == ("delete", "janitor")


@pytest.mark.server
def test_an_async_commit_fenced_off_by_a_revoke_says_who_revoked(durable_server: Any, client: Any,
                                                                 namespace: str) -> None:
    async def scenario() -> FencedError:
        async with await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace) as store:
            lease = await store.acquire("job", owner="a", ttl=30)
            await store.revoke("job", by="admin-x")
            with pytest.raises(FencedError) as fenced:
                await lease.commit(1)
            return fenced.value

    assert asyncio.run(scenario()).revoked_by == "admin-x"


def test_a_fenced_error_without_events_says_what_may_have_happened() -> None:
    err = FencedError("r", token=1, fence=3)
    assert err.cause is None and err.revoked_by is None
    assert "a newer token was handed out since (a takeover, revoke, delete or import)" in str(err)


def test_a_cluster_url_nobody_answers_is_store_unavailable_everywhere() -> None:
    """A Cluster that is down when a store starts is what StoreUnavailableError is for (as for
    one server): from_url (sync and asyncio) and check_server raised redis-py's
    RedisClusterUnreachableError, and the CLI called it a bug in redis-ckpt (exit 3)."""
    from redis_ckpt.testing import free_port

    url = f"redis+cluster://:pw-xyz@127.0.0.1:{free_port()}"
    said = f"cannot reach redis+cluster://:***@127.0.0.1:{url.rsplit(':', 1)[1]}"
    result = unavailable_everywhere(url, said)
    assert "pw-xyz" not in result.output


def unavailable_everywhere(url: str, said: str) -> Any:
    """from_url (sync and asyncio) and check_server raise StoreUnavailableError saying
    ``said``, and the CLI exits 2 with it; the CLI's result."""
    from click.testing import CliRunner

    from redis_ckpt import StoreUnavailableError, check_server
    from redis_ckpt.cli import cli

    with pytest.raises(StoreUnavailableError, match=re.escape(said)):
        CheckpointStore.from_url(url, namespace="default")
    with pytest.raises(StoreUnavailableError, match=re.escape(said)):
        asyncio.run(AsyncCheckpointStore.from_url(url, namespace="default"))
    with pytest.raises(StoreUnavailableError, match=re.escape(said)):
        check_server(url)
    result = CliRunner().invoke(cli, ["runs", "--url", url])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {said}")
    return result


@pytest.mark.server
@pytest.mark.parametrize("userinfo, said", [
    (":wrong-pw@", "authentication failed at redis+cluster://:***@127.0.0.1:{port}: the server rejected"),
    ("", "redis+cluster://127.0.0.1:{port} requires authentication: put the password in the URL"),
    (":right-pw@", "cannot reach redis+cluster://:***@127.0.0.1:{port}: Redis Cluster cannot be connected"),
], ids=["wrong-password", "no-password", "not-a-cluster"])
def test_a_cluster_url_whose_node_refuses_the_client_is_store_unavailable_everywhere(
        make_server: Any, userinfo: str, said: str) -> None:
    """A Cluster URL whose startup node refuses the password (or wants one, or runs no
    cluster) is StoreUnavailableError, as a one-server URL's is: redis-py raises a plain
    RedisClusterException there, which from_url (sync and asyncio) and check_server let out
    as it was and the CLI called a bug in redis-ckpt (exit 3)."""
    server = make_server("valkey", password="right-pw")
    url = f"redis+cluster://{userinfo}127.0.0.1:{server.port}"
    result = unavailable_everywhere(url, said.format(port=server.port))
    assert "wrong-pw" not in result.output and "right-pw" not in result.output
