"""The API RED metrics label requests by route: the routers' paths, not "other"."""

from __future__ import annotations

import httpx
import pytest
from tests.support.harness import Platform

pytestmark = pytest.mark.integration


async def test_http_metrics_label_router_paths_by_route(plat: Platform) -> None:
    async with httpx.AsyncClient(base_url=plat.base_url) as client:
        assert (await client.get("/api/v3/ping")).status_code == 200
        assert (await client.get("/api/v3/depth", params={"symbol": "BTCUSDT"})).status_code \
            == 200
        assert (await client.get("/no/such/path")).status_code == 404
        metrics = (await client.get("/metrics")).text
    lines = [line for line in metrics.splitlines()
             if line.startswith("tradeplane_http_requests_total{")]
    assert any('route="/api/v3/ping"' in line and 'code="200"' in line for line in lines)
    assert any('route="/api/v3/depth"' in line for line in lines)
    assert any('route="other"' in line and 'code="404"' in line for line in lines)
    assert not any("/no/such/path" in line for line in lines)  # bounded labels
