"""Adapters at the edge: the only modules that import nats, asyncpg and redis."""
