"""The admin CLI on a store that has run for months: output piped into ``head``, and listings
whose memory does not grow with the number of runs where only a few are shown."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from redis_ckpt import CheckpointStore

pytestmark = pytest.mark.server


def committed(store: CheckpointStore, *runs: str) -> None:
    for run in runs:
        with store.acquire(run, owner="w", ttl=30) as lease:
            lease.commit({"run": run})


@pytest.mark.parametrize("args", [["runs"], ["verify", "--all"], ["fence", "r-0", "--json"]])
def test_output_piped_into_a_reader_that_stops_early(store: CheckpointStore, durable_server: Any, namespace: str,
                                                    args: list[str]) -> None:
    """`redis-ckpt runs | head -1`: head closes the pipe; the command stops quietly, as a
    program killed by SIGPIPE does (exit 141), never an "unexpected error, a bug" line."""
    committed(store, "r-0", "r-1")
    env = {**os.environ, "REDIS_CKPT_URL": durable_server.url, "REDIS_CKPT_NAMESPACE": namespace}
    proc = subprocess.Popen([sys.executable, "-m", "redis_ckpt.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command prints its first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    proc.stderr.close()
    # only the probe's warnings (on Redis), as text or, with --json, as JSON
    assert all(line.startswith(("warning: ", '{"warning": ')) for line in err.splitlines()), err

