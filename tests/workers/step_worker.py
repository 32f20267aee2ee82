"""A worker process for the step-runner crash test.

    python -m tests.workers.step_worker URL NAMESPACE RUN_ID OWNER LOG_FILE COMMIT_EVERY

Runs four steps s1..s4 with StepRunner; each step appends "<step> <idempotency key> <owner>"
to LOG_FILE (fsynced) when it starts, and "done <step>" when it returns. Step s3 sleeps long
enough for the test to kill the worker after it finished s2 (or s3). Exit 0 when the run
completed.
"""

from __future__ import annotations

import os
import sys
import time

from redis_ckpt import CheckpointStore
from redis_ckpt.steps import StepRunner


def main(url: str, namespace: str, run_id: str, owner: str, log_path: str, commit_every: str) -> int:
    store = CheckpointStore.from_url(url, namespace=namespace)
    runner = StepRunner(store, run_id, owner=owner, ttl=0.5, commit_every=int(commit_every), acquire_timeout=10)
    with open(log_path, "a", buffering=1) as log:

        def note(text: str) -> None:
            log.write(text + "\n")
            log.flush()
            os.fsync(log.fileno())

        def make(name: str, pause: float):
            def step(ctx):
                note(f"{name} {ctx.idempotency_key} {owner}")
                time.sleep(pause)
                note(f"done {name}")
                return {"step": name, "by": owner, "seen": sorted(ctx.results)}

            return step

        for name, pause in (("s1", 0.0), ("s2", 0.0), ("s3", 0.3), ("s4", 2.0 if owner == "first" else 0.0)):
            runner.add(name, make(name, pause))
        runner.run({"job": run_id})
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
