"""A schemathesis pass over the gateway's OpenAPI description against the in-process ASGI
application (the same ``OrderFastPath(create_app(...))`` uvicorn serves): no answer is a
5xx and none contradicts its documented schema. Signed endpoints are called with a valid
key and signature, admin endpoints with the bootstrap admin token, user endpoints with a
logged-in user's access token, so the fuzz reaches past authentication.

Bounded and deterministic: up to 12 examples per operation (~400 requests, some seconds),
derandomized.
The engines, settlement and market data run in a background thread with their own event
loop (schemathesis drives the ASGI app from its own thread, synchronously)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance
from tests.support.harness import Platform, running_platform
from tests.support.security import FAST_HASHING

from tradeplane.domain.signing import sign
from tradeplane.gateway.app import create_app
from tradeplane.gateway.fastpath import OrderFastPath

pytestmark = pytest.mark.integration


class BackgroundPlatform:
    """``running_platform`` on an event loop of its own thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._args, self._kwargs = args, kwargs
        self._ready: Future[Platform] = Future()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        try:
            async with running_platform(*self._args, **self._kwargs) as plat:
                self._ready.set_result(plat)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def __enter__(self) -> Platform:
        self._thread.start()
        return self._ready.result(120)

    def __exit__(self, *_exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


class Auth:
    def __init__(self) -> None:
        self.api_key = self.secret = self.admin = self.user = ""


@pytest.fixture(scope="module")
def background(nats_url: str, pg_url: str, redis_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundPlatform]:
    bg = BackgroundPlatform(nats_url, pg_url, redis_url,
                            mail_outbox=str(tmp_path_factory.mktemp("mail")), **FAST_HASHING)
    with bg:
        yield bg


@pytest.fixture(scope="module")
def auth(background: BackgroundPlatform) -> Auth:
    plat: Platform = background.run(_ready_platform(background))
    a = Auth()
    trader = background.run(plat.trader("fuzz", {"USDT": "100000", "BTC": "10"}))
    a.api_key, a.secret = trader.api_key, trader.secret
    a.admin = plat.settings.admin_token.get_secret_value()
    a.user = background.run(_user_token(plat, Path(plat.settings.mail_outbox)))
    return a


async def _ready_platform(bg: BackgroundPlatform) -> Platform:
    return bg._ready.result()


async def _user_token(plat: Platform, outbox: Path) -> str:
    import httpx
    from tests.support.security import Mailbox, verified_user

    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        tokens = await verified_user(http, Mailbox(outbox), "fuzz@example.com")
    return str(tokens["accessToken"])


@pytest.fixture(scope="module")
def api_schema(background: BackgroundPlatform) -> Iterator[Any]:
    plat: Platform = background.run(_ready_platform(background))
    app = OrderFastPath(create_app(plat.settings))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    asgi.shutdown_lifespans()  # the app's pools and connections, closed on its loop


SIGNED_PREFIXES = ("/api/v3/order", "/api/v3/openOrder", "/api/v3/allOrders",
                   "/api/v3/myTrades", "/api/v3/account", "/sapi/")
EXAMPLES_PER_OPERATION = 12


def _authorise(case: Case, auth: Auth) -> dict[str, str]:
    path = case.operation.path
    headers = {k: str(v) for k, v in (case.headers or {}).items()}
    if path.startswith("/admin"):
        headers["Authorization"] = f"Bearer {auth.admin}"
    elif path.startswith(("/api/v1/user", "/api/v1/auth/logout")):
        headers["Authorization"] = f"Bearer {auth.user}"
    elif path.startswith(SIGNED_PREFIXES) or path == "/api/v3/userDataStream":
        headers["X-MBX-APIKEY"] = auth.api_key
        query = {k: str(v) for k, v in (case.query or {}).items()}
        query.update(timestamp=str(int(time.time() * 1000)), recvWindow="60000")
        query["signature"] = sign(auth.secret, urlencode(query))
        case.query = query
    return headers


def test_no_server_errors_and_no_schema_violations(api_schema: Any, auth: Auth) -> None:
    # schemathesis' pytest loader (from_fixture) does not run on pytest 9: each operation's
    # strategy is driven by Hypothesis directly, derandomized.
    failures: list[str] = []
    calls = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None,
                  database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=_authorise(case, auth),
                                   checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
        except Exception as exc:  # every operation is tried; all failures are reported
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    print(f"fuzz: {calls} requests")
    assert calls >= 100  # the bound: a few per operation
