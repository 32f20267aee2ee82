"""The fault-injection suite (marker ``chaos``): short rounds here, long rounds with
``python bench/chaos.py`` (which writes docs/RELIABILITY.md from the same scenarios).

Each scenario lives in a ``scenario_*.py`` module next to this file and returns a
:class:`chaos_tools.Tally`; a test runs it for a few rounds and asserts the tally is clean.
``CHAOS_ROUNDS`` in the environment raises the number of rounds of every test.
"""

from __future__ import annotations

import os
import random

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: fault-injection suite (kill -9, torn AOF, cut sockets, damaged frames)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A seed per test, printed on failure; CHAOS_SEED=N replays one."""
    value = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
    request.node.user_properties.append(("chaos_seed", value))
    print(f"chaos seed {value} (replay with CHAOS_SEED={value})")
    return value
