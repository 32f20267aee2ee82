"""redis-ckpt: fenced, durable, checksummed checkpoints on Redis and Valkey.

    from redis_ckpt import CheckpointStore

    store = CheckpointStore.from_url("redis://localhost:6379/0", namespace="default")
    with store.acquire("run-42", owner="worker-a", ttl=30) as lease:
        ckpt = lease.load()
        state = ckpt.state if ckpt else {"step": 0}
        ...
        lease.commit(state)          # returns once the AOF fsync confirmed it

The async twin is :class:`redis_ckpt.aio.AsyncCheckpointStore`.
"""

from .core.retry import RetryPolicy
from .core.codec import Encoded, EncodedList, EncodedMap, encoded
from .core.durability import Durability
from . import errors
from .errors import *  # noqa: F403 - every error errors.py defines, as its __all__ lists them
from .models import Checkpoint, Event, GenerationInfo, PrunedRun, RunInfo, RunUsage, SkippedGeneration
from .probe import Finding, ProbeReport
from .store import DEFAULT_NAMESPACE, CheckpointStore, Lease, check_server

__version__ = "0.1.0"

__all__ = [
    # the store
    "CheckpointStore",
    "Lease",
    "Durability",
    "RetryPolicy",
    "check_server",
    "DEFAULT_NAMESPACE",
    # values encoded once, joined into every later commit's encoding (a history that only grows)
    "EncodedList",
    "EncodedMap",
    "encoded",
    "Encoded",
    # what it returns
    "Checkpoint",
    "SkippedGeneration",
    "GenerationInfo",
    "RunInfo",
    "RunUsage",
    "PrunedRun",
    "Event",
    "ProbeReport",
    "Finding",
]
# errors: the classes errors.py defines (one root, CheckpointError), listed once, there
__all__ += errors.__all__
