"""The policy of a test suite on real servers: a server that cannot be had skips the test on a
developer's machine and fails it in CI (``CI`` is ``true`` or ``1``), so CI can never pass by
skipping everything. Needs pytest only when a server is unavailable."""

from __future__ import annotations

import os
from typing import NoReturn

__all__ = ["in_ci", "server_unavailable"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def server_unavailable(reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) the running test because a server cannot be had."""
    import pytest

    if in_ci():
        pytest.fail(f"server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)
