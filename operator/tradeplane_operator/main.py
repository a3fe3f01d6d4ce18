"""``tradeplane-operator``: run the operator (kopf) in-cluster or against a kubeconfig."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("the operator is being built; see issue 3", file=sys.stderr)
    return 2
