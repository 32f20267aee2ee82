"""The drivers: run the core's flows on redis-py clients (sync, asyncio, Cluster)."""
