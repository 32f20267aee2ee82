"""The startup probe: can this server keep an acknowledged commit?

Sans-IO, in six rooms: :mod:`.facts` (what is learned about a server, parsed from its
replies), :mod:`.report` (findings), :mod:`.rules` (what refuses or warns, one small rule
each), :mod:`.settings` (the four settings that refuse a server: the drift check of every
commit applies the same rules), :mod:`.flow` (one server's probe as a flow) and
:mod:`.topology` (the plan probing every node of a Cluster or Sentinel set-up). The one entry point that runs it on a client is
:func:`redis_ckpt.drivers.probe.probe_sync` / :func:`~redis_ckpt.drivers.probe.probe_async`.

This package imports only its pure parts (the core's confirmation of a commit uses the
rules): the flow and the plan are imported from their modules.
"""

from .facts import CONFIG_KEYS, ServerFacts, facts_from_info
from .report import Finding, Level, ProbeReport
from .rules import evaluate
from .settings import DRIFT_KEYS, drift_problems

__all__ = [
    "CONFIG_KEYS",
    "DRIFT_KEYS",
    "Finding",
    "Level",
    "ProbeReport",
    "ServerFacts",
    "drift_problems",
    "evaluate",
    "facts_from_info",
]
