"""``from redis_ckpt.langgraph import RedisCkptSaver``: the LangGraph checkpointer, which
lives in :mod:`redis_ckpt.integrations.langgraph` (see there)."""

from .integrations.langgraph import RedisCkptSaver, thread_run_id

__all__ = ["RedisCkptSaver", "thread_run_id"]
