"""``tradeplane-operator``: run the operator (kopf) in-cluster or against a kubeconfig.

Settings come from the environment (``TRADEPLANE_OPERATOR_*``, see ``settings.py``).
Standalone by default (one replica, no peering objects needed); with
``TRADEPLANE_OPERATOR_STANDALONE=false`` replicas coordinate through kopf peering (the
ClusterKopfPeering/KopfPeering CRDs must be installed; only the highest-priority replica
handles, the others wait). Liveness: ``GET :8080/healthz`` (``..._LIVENESS_PORT``).
"""

from __future__ import annotations

import argparse
import sys

import kopf

from tradeplane.observability import setup_logging
from tradeplane_operator.handlers import build_registry
from tradeplane_operator.settings import OperatorSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradeplane-operator", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging("operator", "DEBUG" if args.verbose else "INFO")  # JSON lines for Loki
    settings = OperatorSettings()
    namespaces = list(settings.namespaces)
    kopf.run(
        registry=build_registry(settings),
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
