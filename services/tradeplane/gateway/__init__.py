"""The public gateway: Binance-spot-compatible REST and WebSocket API (FastAPI)."""
