"""Real Redis/Valkey servers on loopback, for tests, the demo and benchmarks."""

from .local_server import *  # noqa: F401,F403
from .local_server import __all__  # noqa: F401
