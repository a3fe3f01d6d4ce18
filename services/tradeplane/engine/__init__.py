"""The matching-engine service: one process per symbol, the single writer of its book."""
