"""A chaos worker that holds one lease and commits on it until it is fenced off.

    python tests/workers/committer.py URL NAMESPACE RUN OWNER TTL_MS LOG

It acquires RUN once (lease TTL_MS, never renewed: the token, not the lease, is what keeps a
stale writer out) and commits ``{"step": n, "owner": OWNER}`` for n = 1, 2, ... Every line of
LOG is appended and fsynced after the store answered:

    T <token>                          the token acquire() handed out
    A <generation> <token> <step>      an acknowledged commit
    F <token> <fence>                  the commit was fenced: the worker exits 10

Any other error ends it with exit code 3 and the traceback on stderr.
"""

from __future__ import annotations

import os

from lifetime import run_worker  # this script's folder is on sys.path
from redis_ckpt import CheckpointStore, FencedError


def main(url: str, namespace: str, run: str, owner: str, ttl_ms: str, log_path: str) -> int:
    store = CheckpointStore.from_url(url, namespace=namespace, keep=3)
    with open(log_path, "a", buffering=1) as log:
        def write(*fields: object) -> None:
            log.write(" ".join(map(str, fields)) + "\n")
            log.flush()
            os.fsync(log.fileno())

        lease = store.acquire(run, owner=owner, ttl=int(ttl_ms) / 1000)
        write("T", lease.token)
        ck = lease.load()
        step = ck.state["step"] if ck else 0
        while True:
            step += 1
            try:
                generation = lease.commit({"step": step, "owner": owner})
            except FencedError as exc:
                write("F", exc.token, exc.fence)
                return 10
            write("A", generation, lease.token, step)


if __name__ == "__main__":
    run_worker(main, 6)
