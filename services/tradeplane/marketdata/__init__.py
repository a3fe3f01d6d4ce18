"""Market data: the L2 book, trades, tickers and klines derived from the engine's events.

``state`` is the pure fold over event batches; ``service`` runs it against the bus,
writes the Redis cache and the klines table, and publishes the Binance stream payloads.
"""
