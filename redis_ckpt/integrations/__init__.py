"""Integrations of redis-ckpt with other frameworks (``integrations.langgraph``)."""
