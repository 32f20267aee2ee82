"""A worker process for the crash tests: commits to its own run until the server goes away.

    python -m tests.workers.commit_storm URL NAMESPACE RUN_ID ACK_FILE

After every acknowledged commit it appends "generation token step" to ACK_FILE (fsynced),
so the test knows exactly what the store promised. Exit 0 when the server went away
(StoreUnavailableError), 3 on any other error.
"""

from __future__ import annotations

import os
import sys

from redis_ckpt import CheckpointStore, RetryPolicy, StoreUnavailableError


def main(url: str, namespace: str, run_id: str, ack_path: str) -> int:
    store = CheckpointStore.from_url(url, namespace=namespace, keep=3,
                                     retry=RetryPolicy(attempts=2, deadline_s=2.0))
    # a stable owner per run: the next round's worker re-acquires over the lease the killed
    # round left behind (same owner), instead of waiting out its TTL
    lease = store.acquire(run_id, owner=f"storm-{run_id}", ttl=60)
    ck = lease.load()
    step = ck.state["step"] if ck else 0
    with open(ack_path, "a", buffering=1) as ack:
        while True:
            step += 1
            try:
                generation = lease.commit({"step": step, "pad": os.urandom(512)})
            except StoreUnavailableError:
                return 0
            ack.write(f"{generation} {lease.token} {step}\n")
            ack.flush()
            os.fsync(ack.fileno())


if __name__ == "__main__":
    try:
        sys.exit(main(*sys.argv[1:5]))
    except StoreUnavailableError:
        sys.exit(0)
    except Exception as exc:  # any other failure is a test failure: say what it was
        print(f"worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(3)
