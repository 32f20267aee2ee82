"""``redis-ckpt check``: is this server durable enough? (exit 0/1/2)"""

from __future__ import annotations

from collections.abc import Sequence

import click

from .. import Durability, Finding, ProbeReport, check_server
from . import views
from .exits import EXIT_NO, EXIT_OK, EXIT_UNAVAILABLE, CliFailure
from .options import REPLICA_WAIT_MS, CliConfig, connection_options, live_wait_ms

__all__ = ["check", "verdict"]

_VERDICT_EXIT = {"durable": EXIT_OK, "refused": EXIT_NO, "unverifiable": EXIT_UNAVAILABLE}


def verdict(findings: Sequence[Finding]) -> str:
    """``refused`` if any check refuses, else ``unverifiable`` if any cannot tell, else ``durable``."""
    levels = {f.level for f in findings}
    if "refuse" in levels:
        return "refused"
    if "unverifiable" in levels:
        return "unverifiable"
    return "durable"


def _node_reports(report: ProbeReport) -> list[ProbeReport]:
    """One report per probed primary (a Cluster's or Sentinel's); a single server's is one."""
    return list(report.nodes) or [report]


def _policy(cfg: CliConfig, replicas: int, replica_fsync: bool, timeout_ms: int | None) -> Durability:
    """The policy to check against; every wait it implies must end within ``--timeout``."""
    limit_ms = int(cfg.timeout * 1000)
    if timeout_ms is None:
        timeout_ms = live_wait_ms(cfg.timeout)
    elif timeout_ms >= limit_ms:
        raise click.BadParameter(f"{timeout_ms} ms does not end within --timeout {cfg.timeout:g} s; give a "
                                 "longer --timeout", param_hint="--timeout-ms")
    if replicas and REPLICA_WAIT_MS >= limit_ms:
        raise click.BadParameter(f"replicas' AOF acks can take {REPLICA_WAIT_MS} ms: give --timeout "
                                 f"{REPLICA_WAIT_MS // 1000 + 1} or more", param_hint="--replicas")
    return Durability(replicas=replicas, replica_fsync=replica_fsync, timeout_ms=timeout_ms)


@click.command()
@connection_options
@click.option("--replicas", type=click.IntRange(min=0), default=0, show_default=True,
              help="Check against a policy that needs N replicas to confirm every write.")
@click.option("--replica-fsync", is_flag=True,
              help="The replicas must fsync to their AOF (WAITAOF), not only receive (WAIT).")
@click.option("--timeout-ms", type=click.IntRange(min=1), default=None,
              help="How long the live write check waits for its confirmation; it must end within "
                   "--timeout [default: --timeout less 1 s, at least half of it, at most 5000].")
def check(cfg: CliConfig, replicas: int, replica_fsync: bool, timeout_ms: int | None) -> None:
    """Run the startup probe and report every check.

    One line per check: ok, warn, refuse or unverifiable, with its remedy.
    Exit 0 when the server is durable (warnings allowed), 1 when it is refused,
    2 when it cannot be reached or a check is unverifiable.

    Example: redis-ckpt check --url redis://db:6379/0 --replicas 1
    """
    if replica_fsync and not replicas:
        raise click.BadParameter("needs --replicas 1 or more", param_hint="--replica-fsync")
    decl = cfg.declared
    policy = _policy(cfg, replicas, replica_fsync, timeout_ms)
    cfg.validate()
    report = check_server(cfg.url, namespace=cfg.namespace, durability=policy, declared_config=decl,
                          timeout=cfg.timeout)
    nodes = _node_reports(report)
    overall = verdict(report.findings)  # every node's, and the topology's as a whole
    code = _VERDICT_EXIT[overall]
    views.check(cfg, policy=policy, declared=decl or {}, verdict=overall, exit_code=code,
                nodes=[(n, verdict(n.findings)) for n in nodes], topology=report.notes)
    if code != EXIT_OK:
        bad = [f"{f.check} ({f.level})" for f in report.findings if f.level in ("refuse", "unverifiable")]
        raise CliFailure(f"{cfg.server} is {overall}: {', '.join(bad)}", code, secrets=cfg.secrets,
                         server=cfg.server)
