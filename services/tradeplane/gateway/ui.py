"""The web trading UI the gateway serves itself: its pages (``/``, ``/trade/{symbol}``,
``/wallet``, ``/account``, ``/admin``) from package data under ``static/ui`` (native ES
modules, no build step, no CDN; the vendored libraries are under ``static/vendor``, see
LOCK.json), and the three session endpoints a browser needs beyond the public API.

Every action of the pages goes through the same REST/WebSocket API as any client. What
a browser cannot do with the plain user endpoints is keep its secrets out of page script,
so a browser session is:

* ``POST /api/v1/auth/browser-session``: the login (password, and the 2FA code once
  enabled) together with the public half of an Ed25519 key the page generated as
  non-extractable (WebCrypto). The key is registered as the session's API key (read,
  trade, withdraw; withdrawals still ask for the 2FA code; it expires after a day and is
  revoked at logout); the page signs its requests with it, so there is no API secret to
  show or store. The refresh token goes into an HttpOnly, SameSite=Strict cookie scoped to
  ``/api/v1/auth/``: page script never sees it. The answer carries the short-lived access
  token (for the user endpoints) and the key's id.
* ``POST /api/v1/auth/browser-refresh``: a new access token for the cookie (rotated).
* ``POST /api/v1/auth/browser-logout``: revokes the session's key, ends the session and
  clears the cookie.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Final

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as FPath
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from tradeplane.domain.signatures import KeyFormatError, ed25519_public_key
from tradeplane.gateway import apikeys, errors, users
from tradeplane.gateway.apikeys import KeySpec
from tradeplane.gateway.auth import request_ip
from tradeplane.gateway.context import gateway
from tradeplane.gateway.inputs import KEY_ID_RE, SYMBOL
from tradeplane.usecases.audit import user_actor
from tradeplane.usecases.errors import Invalid, NotFound

router = APIRouter(tags=["users"])

UI_DIR: Final = resources.files("tradeplane.gateway") / "static" / "ui"
#: The pages, by their path (``/trade/{symbol}`` is the trade page too).
PAGES: Final = {"/": "trade.html", "/wallet": "wallet.html", "/portfolio": "portfolio.html",
                 "/account": "account.html", "/admin": "admin.html"}
_TRADE_PREFIX: Final = "/trade/"
#: The refresh cookie: sent back only to the session endpoints (``/api/v1/auth/``).
COOKIE: Final = "tp_refresh"
_COOKIE_PATH: Final = "/api/v1/auth/"
#: How long a browser session's API key lives at most (it is revoked at logout).
SESSION_KEY_DAYS: Final = 1

#: The pages' Content-Security-Policy: everything from the gateway only (its streams
#: included: ``'self'`` covers ws: on the same host), no inline script, no eval, no
#: inline style attributes; the QR codes are SVG built in the page.
CSP: Final = (b"default-src 'self'; script-src 'self'; style-src 'self'; "
              b"img-src 'self' data:; connect-src 'self'; font-src 'self'; "
              b"object-src 'none'; base-uri 'none'; form-action 'none'; "
              b"frame-ancestors 'none'")


def is_page(path: str) -> bool:
    """Whether ``path`` is one of the UI's pages (they get :data:`CSP`)."""
    return path in PAGES or path.startswith(_TRADE_PREFIX)


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((UI_DIR / name).read_text(encoding="utf-8"))


@router.get("/", include_in_schema=False)
async def home() -> HTMLResponse:
    return _page("trade.html")


@router.get("/trade/{symbol}", include_in_schema=False)
async def trade(symbol: str = FPath(pattern=SYMBOL)) -> HTMLResponse:
    return _page("trade.html")


@router.get("/wallet", include_in_schema=False)
async def wallet() -> HTMLResponse:
    return _page("wallet.html")


@router.get("/portfolio", include_in_schema=False)
async def portfolio() -> HTMLResponse:
    return _page("portfolio.html")


@router.get("/account", include_in_schema=False)
async def account() -> HTMLResponse:
    return _page("account.html")


@router.get("/admin", include_in_schema=False)
async def admin() -> HTMLResponse:
    return _page("admin.html")


# --------------------------------------------------------------------------- sessions
class BrowserLoginReq(users.LoginReq):
    publicKey: str = Field(min_length=1, max_length=4096,
                           description="The page's Ed25519 public key: base64 of its 32 "
                                       "raw bytes (or PEM).")


class BrowserLogoutReq(BaseModel):
    apiKey: str = Field(default="", max_length=128)


def _set_cookie(request: Request, response: Response, refresh: str, ttl_s: int) -> None:
    response.set_cookie(COOKIE, refresh, max_age=ttl_s, path=_COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def _session_doc(tokens: dict[str, Any]) -> dict[str, Any]:
    return {"accessToken": tokens["accessToken"], "tokenType": "Bearer",
            "expiresIn": tokens["expiresIn"]}


@router.post("/api/v1/auth/browser-session")
async def browser_session(request: Request, response: Response,
                          body: BrowserLoginReq) -> dict[str, Any]:
    """Log in (as ``/api/v1/auth/login``) and register the page's Ed25519 public key as
    this session's API key. The refresh token is set as an HttpOnly cookie, not answered.

    Raises:
        ApiError: as login (-1002 401, -1003 429); -1100 for a public key that is not an
            Ed25519 key.
    """
    try:  # refused before the login: a failed key leaves no session behind
        ed25519_public_key(body.publicKey)
    except KeyFormatError as exc:
        raise errors.ApiError(-1100, f"publicKey: {exc}") from None
    tokens = await users.login(request, users.LoginReq(
        email=body.email, password=body.password, totpCode=body.totpCode))
    claims = gateway(request.app).credentials.read_access(tokens["accessToken"])
    spec = KeySpec(permissions=["read", "trade", "withdraw"], keyType="ED25519",
                   publicKey=body.publicKey, expiresInDays=SESSION_KEY_DAYS,
                   label="browser session")
    # The user's own key, as POST /api/v1/user/api-keys issues it: audited as theirs.
    actor = user_actor(int(claims["sub"]), request_ip(request))
    try:
        rec, _ = await gateway(request.app).controls.account_cases.create_own_key(
            actor, int(claims["acc"]), apikeys.key_request(spec))
    except (Invalid, NotFound) as exc:
        raise apikeys.refusal(exc) from None
    _set_cookie(request, response, tokens["refreshToken"], tokens["refreshExpiresIn"])
    return {**_session_doc(tokens), "apiKey": rec.api_key, "expiresAt": rec.expires_ms}


@router.post("/api/v1/auth/browser-refresh")
async def browser_refresh(request: Request, response: Response) -> dict[str, Any]:
    """A new access token for the refresh cookie (which is rotated).

    Raises:
        ApiError: -1002 (401) without a cookie, or as ``/api/v1/auth/refresh``.
    """
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or len(cookie) > 256:
        raise errors.ApiError(-1002, "No browser session.", 401)
    tokens = await users.refresh(request, users.RefreshReq(refreshToken=cookie))
    _set_cookie(request, response, tokens["refreshToken"], tokens["refreshExpiresIn"])
    return _session_doc(tokens)


@router.post("/api/v1/auth/browser-logout")
async def browser_logout(request: Request, response: Response, body: BrowserLogoutReq,
                         s: users.Session = Depends(users.current_session)) -> dict[str, Any]:
    """Revoke the session's API key (when named and the user's), end the session and
    clear the cookie."""
    if body.apiKey and KEY_ID_RE.fullmatch(body.apiKey):
        try:  # as the user's own revocation: audited, every replica told
            await users.revoke_my_key(request, body.apiKey, s)
        except errors.ApiError as exc:
            if exc.code != -2015:  # -2015: revoked or expired already, or not theirs
                raise
    await users.logout(request, s)
    response.delete_cookie(COOKIE, path=_COOKIE_PATH)
    return {"loggedOut": True}

