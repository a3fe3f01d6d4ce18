"""The trading UI is served by the gateway from package data: every page at its path under
a strict CSP (no inline script, no eval, nothing from another origin), every file a page
or module loads is in the package, the first-party code is native ES modules importing
only the gateway's own files, and the browser-session endpoints are documented."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.support.gateway import guard_only

from tradeplane.config import Settings
from tradeplane.gateway import ui
from tradeplane.gateway.app import create_app
from tradeplane.gateway.context import install
from tradeplane.gateway.fastpath import OrderFastPath

UI = Path(str(ui.UI_DIR))
STATIC = UI.parent
PAGES = {"/": "trade.html", "/trade/ETHBTC": "trade.html", "/wallet": "wallet.html",
         "/portfolio": "portfolio.html",
         "/account": "account.html",
         "/admin": "admin.html"}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(dev_mode=True)
    gateway = create_app(settings)
    install(gateway, guard_only())
    app = OrderFastPath(gateway, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway") as client:
        yield client


def csp_directives(value: str) -> dict[str, str]:
    return {d.split()[0]: d.strip() for d in value.split(";") if d.strip()}


@pytest.mark.parametrize("path", sorted(PAGES))
async def test_every_page_is_served_under_a_strict_csp(http: httpx.AsyncClient,
                                                       path: str) -> None:
    r = await http.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text == (UI / PAGES[path]).read_text()
    csp = csp_directives(r.headers["content-security-policy"])
    assert csp["default-src"] == "default-src 'self'"
    assert csp["script-src"] == "script-src 'self'"  # no inline, no eval
    assert csp["style-src"] == "style-src 'self'"
    assert csp["connect-src"] == "connect-src 'self'"
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("name", sorted(set(PAGES.values())))
async def test_a_page_loads_only_module_scripts_from_the_gateway(
    http: httpx.AsyncClient, name: str
) -> None:
    page = (UI / name).read_text()
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    tags = re.findall(r"<script[^>]*>", page)
    assert tags and all('type="module"' in t and 'src="/static/ui/' in t for t in tags)
    assert all(not body.strip() for body in scripts)  # nothing inline
    assert " on" not in " ".join(re.findall(r"<[^>]+>", page)).replace(" one", "")  # no onclick=
    assert " style=" not in page
    loaded = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page)
    for ref in loaded:
        assert ref.startswith("/static/"), ref
        assert (await http.get(ref)).status_code == 200, ref


def test_modules_import_only_the_gateways_files() -> None:
    for module in UI.glob("*.js"):
        text = module.read_text()
        for spec in re.findall(r'^\s*(?:import|export)[^;]*?from\s+"([^"]+)"', text, re.M | re.S):
            assert spec.startswith(("./", "/static/vendor/")), (module.name, spec)
            target = (UI / spec) if spec.startswith("./") else STATIC / spec[len("/static/"):]
            assert target.resolve().is_file(), (module.name, spec)
        assert "eval(" not in text and "new Function" not in text, module.name
        # No URL of another origin: only the SVG namespace (a name, never fetched).
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', ""), module.name
        assert "https://" not in text, module.name


async def test_the_browser_session_endpoints_are_documented(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    for path in ("/api/v1/auth/browser-session", "/api/v1/auth/browser-refresh",
                 "/api/v1/auth/browser-logout"):
        assert "post" in paths[path], path
    # the pages themselves are not API operations
    assert not {"/", "/wallet", "/portfolio", "/account", "/admin", "/trade/{symbol}"} & set(paths)
