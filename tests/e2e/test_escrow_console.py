"""The admin console's escrow section in a real browser (Chromium, offline but for the
gateway): an open dispute is listed, a resolution without a reason is refused on the
page, and "Refund seller" with a reason resolves it — the row leaves the disputes, the
seller has the asset back, the audit log names the admin."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect
from tests.e2e.test_ui_browser import Browser, screenshots
from tests.support.browser import chromium
from tests.support.harness import Platform, Trader, running_platform

from tradeplane.adapters import db
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.demo.client import ApiClient
from tradeplane.domain.money import to_units

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "escrow-console-admin-token-0123456789"
WAIT_MS = 15_000


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, admin_token=ADMIN_TOKEN) as p:
        yield p


async def party(plat: Platform, funds: dict[str, str]) -> Trader:
    name = f"esc-ui-{secrets.token_hex(4)}"
    account = await db.create_account(plat.pool, name)
    secret = secrets.token_hex(32)
    cipher = SecretCipher(plat.settings.secret_key.get_secret_value())
    key = await db.create_api_key(plat.pool, account, cipher.encrypt(secret),
                                  ["read", "escrow"])
    for asset, amount in funds.items():
        await db.credit(plat.pool, account, asset, to_units(amount), f"{name}:{asset}")
    api = ApiClient(plat.base_url, key, secret)
    plat.clients.append(api)
    return Trader(account, key, secret, api)


async def test_an_admin_resolves_a_dispute_in_the_console(plat: Platform) -> None:
    seller = await party(plat, {"BTC": "1"})
    buyer = await party(plat, {})
    r = await buyer.api.signed("POST", "/sapi/v1/escrow/deal", seller=seller.account,
                               asset="BTC", amount="0.4", priceAsset="EUR", price="20000")
    deal_id = r.json()["dealId"]
    for who, action, extra in ((seller, "fund", {}), (buyer, "paid", {}),
                               (seller, "dispute", {"reason": "no payment arrived"})):
        r = await who.api.signed("POST", f"/sapi/v1/escrow/deal/{action}", dealId=deal_id,
                                 **extra)
        assert r.status_code == 200, r.text
    shots: Path = screenshots()
    watch = Browser(plat.base_url)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"],
                                           headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                                color_scheme="dark")
            page = await watch.page(context)
            await page.goto(f"{plat.base_url}/admin")
            await page.fill("#adm-token", ADMIN_TOKEN)
            await page.click("#adm-signin")
            row = page.locator(f"#escrow-deals tr[data-deal-id='{deal_id}']")
            await row.wait_for(timeout=WAIT_MS)
            await expect(row.locator(".deal-state")).to_have_text("DISPUTED")
            assert "0.4" in await row.inner_text() and "20000 EUR" in await row.inner_text()
            await page.screenshot(path=str(shots / "admin-escrow-dark.png"), full_page=True)

            await row.locator("button.refund").click()  # no reason given: refused here
            await expect(page.locator("body")).to_contain_text("Give a reason",
                                                               timeout=WAIT_MS)
            assert await row.count() == 1
            await page.fill("#escrow-reason", "the buyer's bank shows no transfer")
            await row.locator("button.refund").click()
            await row.wait_for(state="detached", timeout=WAIT_MS)
            await page.select_option("#escrow-state", "RESOLVED_REFUND")
            await expect(row.locator(".deal-state")).to_have_text("RESOLVED_REFUND",
                                                                  timeout=WAIT_MS)
        finally:
            await browser.close()
    print(f"screenshots: {shots}")
    watch.check()
    assert (await plat.balances(seller.account))["BTC"] == (to_units("1"), 0)
    actor = await plat.pool.fetchval(
        "SELECT actor FROM audit_log WHERE target = $1 AND action = $2",
        f"deal:{deal_id}", "escrow.resolve-refund")
    assert actor == "admin:bootstrap"
