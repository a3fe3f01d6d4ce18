"""The tradeplane Kubernetes operator (kopf): TradingPair and Wallet custom resources.

Lives in ``operator/`` as the package ``tradeplane_operator`` (a package named
``operator`` would shadow the standard library).
"""
