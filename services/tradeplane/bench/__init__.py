"""Micro-benchmarks of the pure core: ``python -m tradeplane.bench.<name> --help``."""
