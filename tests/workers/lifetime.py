"""How a worker script the chaos tests spawn by path (``tests/workers/<script>.py``) lives and
ends: never past the process that started it, and any failure but a clean exit reported to the
test as exit code 3 with its traceback on stderr."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable


def exit_with_parent() -> None:
    """End this worker when the process that started it is gone (no orphans left retrying)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def run_worker(main: Callable[..., int], nargs: int) -> None:
    """Run ``main`` on the script's first ``nargs`` arguments, as its process."""
    exit_with_parent()
    try:
        sys.exit(main(*sys.argv[1:1 + nargs]))
    except SystemExit:
        raise
    except BaseException:  # reported to the test through the exit code and stderr
        traceback.print_exc()
        sys.exit(3)
