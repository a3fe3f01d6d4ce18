"""The API reference in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright) opens ``/docs`` on the in-process platform with every request to another host
blocked (``/`` is the trading UI: test_ui_browser.py), and Swagger UI (vendored, no CDN)
lists every operation of the OpenAPI description under the page's strict CSP, without a
script error."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Request, Route, async_playwright
from tests.support.browser import chromium
from tests.support.harness import Platform

pytestmark = pytest.mark.e2e


async def test_docs_render_offline_and_list_every_operation(
    plat: Platform, tmp_path: Path
) -> None:
    base = plat.base_url
    async with httpx.AsyncClient(base_url=base) as http:
        described = (await http.get("/openapi.json")).json()
        csp = (await http.get("/docs")).headers["content-security-policy"]
    # The page runs under a strict policy: scripts from the gateway only, no inline script.
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    documented = {(method.upper(), path) for path, ops in described["paths"].items()
                  for method in ops}

    outside: list[str] = []
    problems: list[str] = []
    fetched: list[str] = []

    async def only_the_gateway(route: Route, request: Request) -> None:
        if request.url.startswith(f"{base}/"):
            fetched.append(request.url[len(base):])
            await route.continue_()
        else:
            outside.append(request.url)
            await route.abort("internetdisconnected")

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":  # CSP refusals and failed loads are reported here
            problems.append(f"console: {msg.text}")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"],
                                           headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 2000})
            await page.route("**/*", only_the_gateway)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            await page.goto(f"{base}/docs")
            await page.wait_for_selector(".opblock", timeout=30_000)
            top = tmp_path / "docs.png"
            await page.screenshot(path=str(top))
            listed: list[list[str]] = await page.eval_on_selector_all(
                ".opblock",
                """els => els.map(e => [
                    e.querySelector('.opblock-summary-method').textContent.trim(),
                    e.querySelector('.opblock-summary-path').getAttribute('data-path')])""")
            # One operation opened: its parameters and error answers are on the page.
            new_order = page.locator(
                '.opblock-post:has(.opblock-summary-path[data-path="/api/v3/order"])')
            await new_order.locator(".opblock-summary-control").click()
            await new_order.locator(".parameters").wait_for(timeout=10_000)
            opened = await new_order.inner_text()
            opened_shot = tmp_path / "docs-new-order.png"
            await new_order.screenshot(path=str(opened_shot))
            title = await page.title()
            # Swagger UI found nothing wrong in the description, and offers the schemes.
            spec_errors = await page.locator(".errors-wrapper").count()
            await page.click(".auth-wrapper .authorize")
            await page.wait_for_selector(".auth-container", timeout=10_000)
            schemes = await page.inner_text(".modal-ux")
            info = await page.inner_text(".information-container")
        finally:
            await browser.close()

    print(f"screenshots: {top}, {opened_shot}")
    assert not outside, f"the page tried to reach other hosts: {outside}"
    assert not problems, "\n".join(problems)
    assert title == "tradeplane API reference"
    assert spec_errors == 0
    for scheme in ("ApiKey", "Signature", "UserSession", "AdminToken", "X-MBX-APIKEY"):
        assert scheme in schemes, scheme
    assert {"/docs", "/openapi.json", "/static/docs.js"} <= {u.split("?")[0] for u in fetched}
    shown = {(m, p) for m, p in listed}
    for wanted in [("POST", "/api/v3/order"), ("GET", "/api/v3/order"),
                   ("DELETE", "/api/v3/order"), ("GET", "/api/v3/depth"),
                   ("POST", "/admin/users"), ("POST", "/api/v1/auth/login")]:
        assert wanted in shown, wanted
    assert shown == documented
    for name in ("symbol", "side", "type", "timeInForce", "quantity", "price",
                 "newOrderRespType", "selfTradePreventionMode", "recvWindow", "timestamp"):
        assert name in opened, name
    assert "-2010" in opened  # its refusals, with our codes
    assert "-1121" in info and "HMAC-SHA256" in info  # the codes and the signature scheme
    assert top.stat().st_size > 10_000 and opened_shot.stat().st_size > 10_000
