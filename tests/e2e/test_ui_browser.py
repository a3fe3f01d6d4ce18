"""The trading UI in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright) against the in-process platform, every request to another host blocked
throughout, failing on any page error or console error (CSP refusals are console errors).

Trade page: a verified user signs in (a second one with 2FA, through the code step),
takes a price by clicking a row of the book, sees the order in open orders without a
reload, cancels it, trades against another account and sees the trade on the tape and in
their trades, places MARKET (by quote amount) and OCO orders (confirming the
far-from-market price), sees another account's trade arrive on the tape, toggles the
theme; an admin opens the console. Wallet page (a wallet on the in-memory FakeChain): a
user with 2FA sees their deposit address as a QR code and the deposit credited, asks a
withdrawal with the 2FA code, and sees it move once an admin approves it in the console.
Account page: sign up, verify, 2FA, API keys, log out everywhere.

Screenshots of each page in both themes go to a temporary folder (printed;
``TRADEPLANE_UI_SCREENSHOTS`` names another), not to the repository.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Route,
    async_playwright,
)
from tests.support.browser import chromium
from tests.support.fake_chain import FakeChain
from tests.support.harness import Platform, Trader, running_platform
from tests.support.security import FAST_HASHING, Mailbox, verified_user

from tradeplane.adapters import db, wallets_db
from tradeplane.adapters.bus import Bus
from tradeplane.domain.custody import wallet_from_spec
from tradeplane.domain.money import to_units
from tradeplane.wallets.service import custody_over
from tradeplane.wallets.settings import WalletSettings

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "ui-test-admin-token-0123456789abcdef"
PASSWORD = "correct horse battery"
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str,
               outbox: Path) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, mail_outbox=str(outbox),
                                admin_token=ADMIN_TOKEN, **FAST_HASHING) as p:
        yield p


def screenshots() -> Path:
    folder = os.environ.get("TRADEPLANE_UI_SCREENSHOTS") or tempfile.mkdtemp(prefix="tp-ui-")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


async def user_account(http: httpx.AsyncClient, token: str) -> int:
    me = await http.get("/api/v1/user/me", headers={"Authorization": f"Bearer {token}"})
    account: int = me.json()["account"]
    return account


async def fund(plat: Platform, account: int, funds: dict[str, str]) -> None:
    for asset, amount in funds.items():
        await db.credit(plat.pool, account, asset, to_units(amount), f"ui-test:{account}:{asset}")


async def order(trader: Trader, **params: Any) -> dict[str, Any]:
    r = await trader.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", **params)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


@dataclass
class Browser:
    """A Chromium page that may reach the gateway only, with its problems collected."""

    base: str
    outside: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    async def only_the_gateway(self, route: Route, request: Request) -> None:
        if request.url.startswith(f"{self.base}/"):
            await route.continue_()
        else:
            self.outside.append(request.url)
            await route.abort("internetdisconnected")

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":  # CSP refusals and failed loads are reported here
            self.problems.append(f"console: {msg.text}")

    async def page(self, context: BrowserContext) -> Page:
        await context.route("**/*", self.only_the_gateway)
        page = await context.new_page()
        page.on("console", self.on_console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        return page

    def check(self) -> None:
        assert not self.outside, f"the pages tried to reach other hosts: {self.outside}"
        assert not self.problems, "\n".join(self.problems)


async def sign_in_2fa(watch: Browser, page: Page, email: str, code: str) -> None:
    """Sign in through the 2FA step. The password alone is refused first (401, as asked
    for): Chromium reports every refused request on the console, this one expected."""
    before = len(watch.problems)
    await sign_in(page, email, code)
    asked = [p for p in watch.problems[before:] if "status of 401" in p]
    assert len(asked) == 1, watch.problems[before:]
    watch.problems.remove(asked[0])


async def sign_in(page: Page, email: str, code: str | None = None) -> None:
    await page.click("#signin-open")
    await page.fill("#si-email", email)
    await page.fill("#si-password", PASSWORD)
    await page.click("#signin button[type=submit]")
    if code is not None:
        await page.wait_for_selector("#si-code", state="visible", timeout=WAIT_MS)
        await page.fill("#si-code", code)
        await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#signout", timeout=WAIT_MS)


async def test_trading_in_the_browser_offline(plat: Platform, outbox: Path) -> None:
    base = plat.base_url
    mail = Mailbox(outbox)
    async with httpx.AsyncClient(base_url=base) as http:
        ann = await verified_user(http, mail, "ann@example.com", PASSWORD)
        await fund(plat, await user_account(http, ann["accessToken"]),
                   {"USDT": "100000", "BTC": "2"})
        # A second user with 2FA on: the sign-in asks for the code (a recovery code here;
        # an authenticator's code is good once per 30 s step).
        tom = await verified_user(http, mail, "tom@example.com", PASSWORD)
        auth = {"Authorization": f"Bearer {tom['accessToken']}"}
        secret = (await http.post("/api/v1/user/2fa/setup", headers=auth)).json()["secret"]
        enabled = await http.post("/api/v1/user/2fa/enable", headers=auth,
                                  json={"code": pyotp.TOTP(secret).now()})
        assert enabled.status_code == 200, enabled.text
        recovery = enabled.json()["recoveryCodes"][0]
        csp = (await http.get("/")).headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert "unsafe" not in csp
    bob = await plat.trader("bob", {"USDT": "1000000", "BTC": "100"})
    carol = await plat.trader("carol", {"USDT": "1000000", "BTC": "100"})
    await order(bob, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.5",
                price="49900")
    await order(bob, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.5",
                price="50100")

    shots = screenshots()
    watch = Browser(base)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"],
                                           headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800},
                                                color_scheme="dark")
            page = await watch.page(context)

            await page.goto(f"{base}/")
            await page.wait_for_selector("#bids .level", timeout=WAIT_MS)
            await page.screenshot(path=str(shots / "trade-signed-out-dark.png"))
            await sign_in(page, "ann@example.com")
            await page.wait_for_selector("#conn[data-state=live]", timeout=WAIT_MS)

            # Click the bid at 49900: its price goes into the (BUY) order form.
            await page.click('#bids .level[data-price^="49900"]')
            assert float(await page.input_value("#o-price")) == 49900
            await page.fill("#o-qty", "0.01")
            await page.click("#o-submit")
            open_row = page.locator("#pane-open tr[data-order-id]")
            await open_row.first.wait_for(timeout=WAIT_MS)  # live: no reload
            assert await open_row.count() == 1
            assert "49900" in await open_row.first.inner_text()
            # ... and the book shows the bigger level.
            await page.wait_for_selector('#bids .level[data-price^="49900"]:has-text("0.51")',
                                         timeout=WAIT_MS)
            await page.screenshot(path=str(shots / "trade-open-order-dark.png"))
            await page.click("#pane-open button.cancel")
            await open_row.first.wait_for(state="detached", timeout=WAIT_MS)
            await page.click("#tab-history")
            await page.wait_for_selector("#pane-history td:has-text('CANCELED')",
                                         timeout=WAIT_MS)

            # Amend: a resting order's amount, lowered in place (it keeps its priority).
            await page.click("#tab-open")
            await page.fill("#o-price", "49000")
            await page.fill("#o-qty", "0.05")
            await page.click("#o-submit")
            await open_row.first.wait_for(timeout=WAIT_MS)
            await page.click("#pane-open button.amend")
            await page.fill("#pane-open input.amend-qty", "0.03")
            await page.click("#pane-open button.amend-save")
            await page.wait_for_selector("#pane-open tr[data-order-id] td:text-is('0.03')",
                                         timeout=WAIT_MS)
            await page.click("#pane-open button.cancel")
            await open_row.first.wait_for(state="detached", timeout=WAIT_MS)

            # The % slider: half of the available BTC on the SELL side.
            await page.check("input[name=side][value=SELL]")
            await page.fill("#o-pct", "50")
            await page.dispatch_event("#o-pct", "input")
            assert float(await page.input_value("#o-qty")) == pytest.approx(1.0, abs=1e-5)
            await page.check("input[name=side][value=BUY]")

            # A BUY at the ask trades with bob: the tape and my trades show it, live.
            await page.fill("#o-price", "50100")
            await page.fill("#o-qty", "0.02")
            await page.click("#o-submit")
            await page.click("#tab-mytrades")
            await page.wait_for_selector("#pane-mytrades tr[data-trade-id]", timeout=WAIT_MS)
            mine = await page.inner_text("#pane-mytrades")
            assert "50100" in mine and "0.02" in mine and "Taker" in mine
            await page.wait_for_selector("#tape .trow:has-text('50,100.00')", timeout=WAIT_MS)
            await page.click("#tab-tape-mine")
            await page.wait_for_selector("#tape-mine .trow:has-text('50,100.00')",
                                         timeout=WAIT_MS)
            await page.click("#tab-tape-market")

            # Another account's trade arrives on the tape.
            await order(carol, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.037",
                        price="50100")
            await page.wait_for_selector("#tape .trow:has-text('0.03700')", timeout=WAIT_MS)

            # MARKET by quote amount.
            await page.select_option("#o-type", "MARKET")
            await page.check("input[name=by][value=quote]")
            await page.fill("#o-quote", "100")
            await page.click("#o-submit")
            await page.wait_for_selector("#pane-mytrades tr[data-trade-id] >> nth=1",
                                         timeout=WAIT_MS)

            # OCO, SELL: take profit at 54000, stop at 46000 (limit 45900). 54000 is far
            # from the last price (8%; the pair's PERCENT_PRICE allows 20%): the page asks.
            await page.check("input[name=side][value=SELL]")
            await page.select_option("#o-type", "OCO")
            await page.fill("#o-price", "54000")
            await page.fill("#o-stop", "46000")
            await page.fill("#o-stoplimit", "45900")
            await page.fill("#o-qty", "0.01")
            await page.click("#o-submit")
            await page.wait_for_selector("#confirm[open]", timeout=WAIT_MS)
            assert "from the last price" in await page.inner_text("#confirm-text")
            await page.click("#confirm-ok")
            await page.click("#tab-open")
            await page.wait_for_selector("#pane-open tr[data-order-id] >> nth=1",
                                         timeout=WAIT_MS)
            legs = await page.inner_text("#pane-open")
            assert "LIMIT_MAKER" in legs and "STOP_LOSS_LIMIT" in legs
            # TAKE_PROFIT_LIMIT, SELL: triggered at 50500, sells at 50400.
            await page.select_option("#o-type", "TAKE_PROFIT_LIMIT")
            await page.fill("#o-stop", "50500")
            await page.fill("#o-price", "50400")
            await page.fill("#o-qty", "0.01")
            await page.click("#o-submit")
            await page.wait_for_selector("#pane-open td:text-is('TAKE_PROFIT_LIMIT')",
                                         timeout=WAIT_MS)

            # Another candle interval: its candles are loaded and its stream followed.
            async with page.expect_response(lambda r: "/api/v3/klines" in r.url
                                            and "interval=5m" in r.url) as klines:
                await page.click("#intervals [data-interval='5m']")
            assert (await klines.value).status == 200
            assert await page.get_attribute("[data-interval='5m']", "aria-pressed") == "true"
            await page.click("#intervals [data-interval='1m']")

            # The depth chart, then both themes.
            await page.click("#tab-depth")
            await page.wait_for_timeout(300)  # one frame of the chart's drawing
            await page.screenshot(path=str(shots / "trade-depth-dark.png"))
            await page.click("#tab-candles")
            await page.screenshot(path=str(shots / "trade-dark.png"))
            await page.click("#theme")
            assert await page.get_attribute("html", "data-theme") == "light"
            await page.screenshot(path=str(shots / "trade-light.png"))

            # Wallet (the theme is kept), then back to dark.
            await page.goto(f"{base}/wallet")
            await page.wait_for_selector("#balances tr[data-coin=BTC]", timeout=WAIT_MS)
            assert await page.get_attribute("html", "data-theme") == "light"
            assert "USDT" in await page.inner_text("#total")
            await page.screenshot(path=str(shots / "wallet-light.png"), full_page=True)
            await page.click("#theme")
            await page.screenshot(path=str(shots / "wallet-dark.png"), full_page=True)

            # The admin console with the admin token.
            await page.goto(f"{base}/admin")
            await page.fill("#adm-token", ADMIN_TOKEN)
            await page.click("#adm-signin")
            await page.wait_for_selector("#sec-pairs tr[data-symbol=BTCUSDT]", timeout=WAIT_MS)
            await page.wait_for_selector("#audit td:has-text('user.2fa.enable')",
                                         timeout=WAIT_MS)
            assert await page.inner_text("#kill-state") == "off"
            await page.fill("#user-q", "ann@example.com")
            await page.click("#user-find button")
            await page.wait_for_selector("#user-doc td:has-text('ann@example.com')",
                                         timeout=WAIT_MS)
            await page.fill("#credit-asset", "ETH")
            await page.fill("#credit-amount", "3")
            await page.click("#credit-submit")
            await page.wait_for_selector("#notices :text('Credited 3 ETH')", timeout=WAIT_MS)
            await page.screenshot(path=str(shots / "admin-dark.png"), full_page=True)
            await page.click("#theme")
            await page.screenshot(path=str(shots / "admin-light.png"), full_page=True)

            # Signing out revokes the session's key.
            await page.goto(f"{base}/")
            await page.click("#signout")
            await page.wait_for_selector("#signin-open", timeout=WAIT_MS)

            # The second user: the sign-in asks for the 2FA code; a phone-width screen.
            phone = await browser.new_context(viewport={"width": 390, "height": 844},
                                              color_scheme="light")
            small = await watch.page(phone)
            await small.goto(f"{base}/trade/BTCUSDT")
            await sign_in_2fa(watch, small, "tom@example.com", recovery)
            await small.wait_for_selector("#bids .level", timeout=WAIT_MS)
            await small.screenshot(path=str(shots / "trade-phone-light.png"), full_page=True)
        finally:
            await browser.close()

    print(f"screenshots: {shots}")
    watch.check()
    credits = await plat.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'account.credit'")
    assert credits == 1
    keys = await plat.pool.fetch(
        "SELECT k.revoked_at FROM api_keys k JOIN users u ON u.account_id = k.account_id "
        "WHERE u.email = 'ann@example.com'")
    assert keys and all(k["revoked_at"] is not None for k in keys)


async def test_wallet_deposit_and_withdrawal_approved_in_the_console(
    plat: Platform, outbox: Path
) -> None:
    """A wallet (its watcher on the in-memory FakeChain) serves LTC: the user's deposit
    address and its QR code, a deposit credited, a withdrawal asked with the 2FA code,
    waiting for approval, approved by the admin in the console, and the user's page
    following its status without a reload."""
    base = plat.base_url
    chain = FakeChain(asset="LTC")
    spec = wallet_from_spec("ltc-ui", {
        "chain": "litecoin", "network": "regtest", "asset": "LTC",
        "rpc": {"url": "http://fake-node:1"}, "confirmations": 1,
        "withdrawals": {"fee": "0.001", "min": "0.01", "approvalThreshold": "0.1"}})
    await wallets_db.upsert_wallet(plat.pool, spec)
    bus = await Bus.connect(plat.settings.nats_url, name="ui-test-wallet")
    custody = custody_over(spec, chain, plat.pool, bus, WalletSettings())
    unsubscribe = await custody.serve()
    async with httpx.AsyncClient(base_url=base) as http:
        una = await verified_user(http, Mailbox(outbox), "una@example.com", PASSWORD)
        auth = {"Authorization": f"Bearer {una['accessToken']}"}
        secret = (await http.post("/api/v1/user/2fa/setup", headers=auth)).json()["secret"]
        enabled = await http.post("/api/v1/user/2fa/enable", headers=auth,
                                  json={"code": pyotp.TOTP(secret).now()})
        codes = enabled.json()["recoveryCodes"]
    shots = screenshots()
    watch = Browser(base)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium(),
                                               args=["--no-sandbox"], headless=True)
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 800},
                                                    color_scheme="dark")
                page = await watch.page(context)
                await page.goto(f"{base}/wallet")
                await sign_in_2fa(watch, page, "una@example.com", codes[0])

                await page.wait_for_selector("#dep-coin option[value=LTC]", state="attached",
                                             timeout=WAIT_MS)
                await page.select_option("#dep-coin", "LTC")
                await page.click("#dep-show")
                await page.wait_for_selector("#dep-address .qr svg path", timeout=WAIT_MS)
                address = await page.inner_text("#dep-address-text")
                assert address.startswith("fake1acct")

                # Someone pays 0.5 LTC to it; one confirmation credits it.
                chain.pay(address, to_units("0.5"))
                chain.mine(1)
                await custody.watcher.step()
                await page.wait_for_selector("#dep-history td:has-text('Credited')",
                                             timeout=WAIT_MS)
                await page.wait_for_selector("#balances tr[data-coin=LTC] td:has-text('0.5')",
                                             timeout=WAIT_MS)
                await page.screenshot(path=str(shots / "wallet-deposit-dark.png"),
                                      full_page=True)

                # Withdraw 0.2 (above the approval threshold) with the 2FA code.
                await page.select_option("#wd-coin", "LTC")
                await page.fill("#wd-address", "fake1out")
                await page.fill("#wd-amount", "0.2")
                await page.fill("#wd-code", codes[1])
                await page.click("#wd-submit")
                await page.wait_for_selector(
                    "#wd-history td.status:has-text('Awaiting approval')", timeout=WAIT_MS)
                await page.screenshot(path=str(shots / "wallet-withdrawal-dark.png"),
                                      full_page=True)

                # The admin approves it in the console (another tab).
                console = await watch.page(context)
                await console.goto(f"{base}/admin")
                await console.fill("#adm-token", ADMIN_TOKEN)
                await console.click("#adm-signin")
                row = console.locator("#wd-queue tr[data-withdrawal-id]")
                await row.first.wait_for(timeout=WAIT_MS)
                assert "fake1out" in await row.first.inner_text()
                await console.screenshot(path=str(shots / "admin-withdrawals-dark.png"),
                                         full_page=True)
                await console.click("#wd-queue button.approve")
                await row.first.wait_for(state="detached", timeout=WAIT_MS)

                # The user's page follows the status.
                await page.wait_for_selector("#wd-history td.status:has-text('Processing')",
                                             timeout=WAIT_MS)
            finally:
                await browser.close()
    finally:
        for unsub in unsubscribe:
            await unsub()
        await bus.close()
    print(f"screenshots: {shots}")
    w = await plat.pool.fetchval("SELECT status FROM withdrawals WHERE address = 'fake1out'")
    assert w == "APPROVED"
    watch.check()


async def test_sign_up_verify_2fa_and_api_keys_in_the_browser(
    plat: Platform, outbox: Path
) -> None:
    """The account page: sign up, verify the email with the mailed token, sign in, turn on
    2FA from the QR code's secret (recovery codes shown once), create an API key with the
    2FA code and an IP list (its secret shown once), revoke it, see the login history, log
    out everywhere (the browser sessions' keys revoked), and sign in again through the
    authenticator's code."""
    base = plat.base_url
    mail = Mailbox(outbox)
    shots = screenshots()
    watch = Browser(base)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"],
                                           headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800},
                                                color_scheme="light")
            page = await watch.page(context)
            await page.goto(f"{base}/account")
            await page.fill("#su-email", "sue@example.com")
            await page.fill("#su-password", PASSWORD)
            await page.click("#su-submit")
            await page.wait_for_selector("#su-msg:has-text('Check your email')",
                                         timeout=WAIT_MS)
            await page.fill("#ve-token", mail.token_for("sue@example.com"))
            await page.click("#ve-submit")
            await page.wait_for_selector("#ve-msg:has-text('Email verified')", timeout=WAIT_MS)
            await page.screenshot(path=str(shots / "account-signup-light.png"), full_page=True)
            await sign_in(page, "sue@example.com")

            await page.click("#tf-setup")
            await page.wait_for_selector("#tf-body .qr svg path", timeout=WAIT_MS)
            secret = await page.inner_text("#tf-secret")
            await page.screenshot(path=str(shots / "account-2fa-light.png"), full_page=True)
            await page.fill("#tf-code", pyotp.TOTP(secret).now())
            await page.click("#tf-enable")
            codes = page.locator("#recovery-codes li")
            await codes.first.wait_for(timeout=WAIT_MS)
            assert await codes.count() == 10
            recovery = await codes.nth(0).inner_text()
            assert await page.inner_text("#tf-state") == "on"

            await page.fill("#key-label", "bot")
            await page.check("input[name=perm][value=withdraw]")
            await page.fill("#key-ips", "127.0.0.1, 10.0.0.0/8")
            await page.fill("#key-code", recovery)
            await page.click("#key-create")
            await page.wait_for_selector("#new-secret", timeout=WAIT_MS)
            assert len(await page.inner_text("#new-secret")) == 64
            bot = page.locator("#keys tr:has-text('bot')")
            await bot.wait_for(timeout=WAIT_MS)
            listed = await bot.inner_text()
            assert "withdraw" in listed and "10.0.0.0/8" in listed
            await page.wait_for_selector("#logins td:has-text('ok')", timeout=WAIT_MS)
            await page.click("#theme")
            await page.screenshot(path=str(shots / "account-dark.png"), full_page=True)
            await bot.locator("button.revoke").click()
            await bot.wait_for(state="detached", timeout=WAIT_MS)

            await page.click("#logout-all")
            await page.wait_for_selector("#signin-open", timeout=WAIT_MS)
            assert not await page.is_visible("#sec-keys")

            # Signing in again asks for the authenticator's code: the next 30 s step's
            # (one step of clock skew is allowed; the enabling code's step is used up).
            await sign_in_2fa(watch, page, "sue@example.com",
                              pyotp.TOTP(secret).at(time.time() + 30))
            await page.wait_for_selector("#tf-state:text-is('on')", timeout=WAIT_MS)
            await page.click("#signout")
            await page.wait_for_selector("#signin-open", timeout=WAIT_MS)
        finally:
            await browser.close()
    print(f"screenshots: {shots}")
    watch.check()
    live = await plat.pool.fetchval(
        "SELECT count(*) FROM api_keys k JOIN users u ON u.account_id = k.account_id "
        "WHERE u.email = 'sue@example.com' AND k.revoked_at IS NULL")
    assert live == 0
    assert await plat.pool.fetchval(
        "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE u.email = 'sue@example.com' AND s.revoked_at IS NULL") == 0


async def test_the_page_reconnects_and_resyncs_without_a_reload(plat: Platform) -> None:
    """The gateway goes away and comes back: the header says so, and the book (a new
    snapshot, then the diffs), the tape and the user's orders (a listen key asked for
    again) are live again without a reload."""
    base = plat.base_url
    dan = await plat.trader("dan", {"USDT": "1000000", "BTC": "100"})
    await order(dan, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.7",
                price="48800")
    watch = Browser(base)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"],
                                           headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await watch.page(context)
            await page.goto(f"{base}/")
            await page.wait_for_selector('#bids .level[data-price^="48800"]', timeout=WAIT_MS)
            await sign_in(page, "ann@example.com")
            await page.wait_for_selector("#conn[data-state=live]", timeout=WAIT_MS)
            before = len(watch.problems)
            await plat.stop_service("gateway")
            await page.wait_for_selector("#conn[data-state=reconnecting]", timeout=WAIT_MS)
            await plat.start_gateway()
            await page.wait_for_selector("#conn[data-state=live]", timeout=30_000)
            # While it was away, the failed connections were reported on the console.
            gone = watch.problems[before:]
            assert all("WebSocket" in p or "Failed to load" in p or "ERR_" in p
                       for p in gone), gone
            del watch.problems[before:]
            await order(dan, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.3",
                        price="48700")
            await page.wait_for_selector('#bids .level[data-price^="48700"]', timeout=WAIT_MS)
            await order(dan, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.011",
                        price="48800")
            await page.wait_for_selector("#tape .trow:has-text('0.01100')", timeout=WAIT_MS)
            # The user data stream is back too: a new order shows in open orders, live.
            await page.fill("#o-price", "48000")
            await page.fill("#o-qty", "0.01")
            await page.click("#o-submit")
            await page.wait_for_selector("#pane-open tr[data-order-id] td:text-is('48000')",
                                         timeout=WAIT_MS)
        finally:
            await browser.close()
    watch.check()


# The order book's sync, Binance's way, driven event by event in the browser: the page's
# own module, with the REST snapshot stubbed (``fetch`` answers the snapshots in turn).
DEPTH_SCRIPT = """async () => {
  const snapshots = [
    {lastUpdateId: 100, bids: [["10.00", "1.0"]], asks: [["11.00", "1.0"]]},
    {lastUpdateId: 205, bids: [["10.00", "3.0"]], asks: [["11.00", "1.0"]]},
    {lastUpdateId: 300, bids: [["10.00", "4.0"]], asks: []},
    {lastUpdateId: 310, bids: [["10.00", "5.0"]], asks: []},
  ];
  const asked = [];
  window.fetch = async (url) => {
    asked.push(String(url));
    return new Response(JSON.stringify(snapshots.shift()), {status: 200});
  };
  const { DepthBook } = await import("/static/ui/net.js");
  const changes = [];
  const book = new DepthBook("BTCUSDT", (b) => changes.push(b.lastUpdateId));
  const ev = (U, u, b = [], a = []) => ({e: "depthUpdate", U, u, b, a});
  const until = async (cond) => {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  };
  book.reset();                                  // snapshot 100 is being fetched
  book.apply(ev(95, 99, [["10.00", "9.0"]]));    // buffered, then dropped: u <= 100
  book.apply(ev(100, 102, [["9.00", "2.0"]]));   // buffered, then applied: U <= 101 <= u
  await until(() => book.synced);
  const first = {id: book.lastUpdateId, bids: book.levels("bids").map((l) => [l[0], l[1]])};
  book.apply(ev(103, 103, [], [["11.00", "0"]])); // contiguous: the ask goes
  const second = {id: book.lastUpdateId, asks: book.asks.size};
  book.apply(ev(110, 111));                       // a gap (104..109 missing): resync
  const resyncing = book.synced;
  book.apply(ev(112, 206, [["8.00", "1.0"]]));    // buffered until the new snapshot
  await until(() => book.synced && book.lastUpdateId === 206);
  const final = book.lastUpdateId;
  const bids = book.levels("bids").map((l) => [l[0], l[1]]);
  // A snapshot older than the first buffered diff (300 < 305 - 1): another one is taken.
  book.reset();
  book.apply(ev(305, 306, [["7.00", "1.0"]]));
  await new Promise((r) => setTimeout(r, 50));
  book.apply(ev(307, 311, [["6.00", "1.0"]]));
  await until(() => book.synced && book.lastUpdateId === 311);
  return {first, second, resyncing, final, bids, asked: asked.length,
          late: {id: book.lastUpdateId, bids: book.levels("bids").map((l) => [l[0], l[1]])}};
}"""


async def test_the_book_follows_binances_sync_rules(plat: Platform) -> None:
    watch = Browser(plat.base_url)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"],
                                           headless=True)
        try:
            page = await watch.page(await browser.new_context())
            await page.goto(f"{plat.base_url}/static/ui/favicon.svg")  # the gateway's origin
            got = await page.evaluate(DEPTH_SCRIPT)
        finally:
            await browser.close()
    assert got["first"] == {"id": 102, "bids": [["10.00", "1.0"], ["9.00", "2.0"]]}
    assert got["second"] == {"id": 103, "asks": 0}
    assert got["resyncing"] is False and got["asked"] == 4
    # The second snapshot (205) replaced the book; the buffered diff 112..206 followed it.
    assert got["final"] == 206
    assert got["bids"] == [["10.00", "3.0"], ["8.00", "1.0"]]
    # 305..306 is before snapshot 310 (dropped); 307..311 straddles it (applied).
    assert got["late"] == {"id": 311, "bids": [["10.00", "5.0"], ["6.00", "1.0"]]}
    watch.check()
