"""What the startup probe answers: one :class:`Finding` per check, gathered in a :class:`ProbeReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import NonDurableServerError
from .facts import ServerFacts

__all__ = ["Level", "Finding", "ProbeReport"]

Level = Literal["ok", "warn", "refuse", "unverifiable"]


@dataclass(frozen=True)
class Finding:
    """One check's outcome. ``refuse`` and ``unverifiable`` make the probe refuse the server."""

    check: str
    level: Level
    message: str
    remedy: str = ""

    @property
    def refuses(self) -> bool:
        return self.level in ("refuse", "unverifiable")

    def __str__(self) -> str:
        return f"{self.message} — {self.remedy}" if self.remedy else self.message


@dataclass(frozen=True)
class ProbeReport:
    """Every finding of one probe of one server (``server`` is a label without password)."""

    server: str
    engine: str  # "valkey" | "redis" | "unknown"
    version: str
    findings: list[Finding]
    facts: ServerFacts | None = field(default=None, repr=False, compare=False)
    #: a Cluster's or Sentinel's probe: one report per primary (its own findings and its
    #: replicas'); ``findings`` holds all of them, each prefixed with its node, and ``notes``
    nodes: tuple[ProbeReport, ...] = field(default=(), repr=False, compare=False)
    #: findings on the topology as a whole (slot coverage, the Sentinels' view), also in ``findings``
    notes: tuple[Finding, ...] = field(default=(), repr=False, compare=False)

    @property
    def refused(self) -> list[Finding]:
        return [f for f in self.findings if f.refuses]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warn"]

    @property
    def ok(self) -> bool:
        return not self.refused

    def raise_if_refused(self) -> None:
        refused = self.refused
        if refused:
            raise NonDurableServerError(self.server, refused)

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "REFUSED"
        head = f"{self.server} ({self.engine} {self.version or '?'}): {verdict}"
        return "\n".join([head, *(f"  [{f.level}] {f.check}: {f}" for f in self.findings)])
