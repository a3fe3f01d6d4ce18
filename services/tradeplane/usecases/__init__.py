"""The application layer: each admin operation written once, over ports it declares.

``pairs`` owns a pair's trading state (halt, resume, cancel-only, the kill switch, fees)
and the one way a ``SetTrading`` command and its message id are made; ``accounts`` owns
users, API keys, admin identities and credits. Every change is audited by the use case
itself, so the admin API and the CLI leave the same record. Entry points (the gateway's
routes, the CLI, the operator) call this layer; adapters implement its ports. It imports
only the domain (an import-linter contract holds it to that).
"""
