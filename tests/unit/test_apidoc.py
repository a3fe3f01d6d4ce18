"""The API reference says everything a client needs: every Binance operation's parameters
and security, the error model with every code the gateway answers, the admin roles and
body fields, in client words; ``/docs`` is served from the package (no CDN) under a strict
CSP (``/`` is the trading UI's: test_ui_pages.py), and unknown paths answer Binance's
``{"code", "msg"}``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import guard_only

from tradeplane.config import Settings
from tradeplane.gateway import apidoc
from tradeplane.gateway.app import create_app
from tradeplane.gateway.context import install
from tradeplane.gateway.fastpath import OrderFastPath

GATEWAY = Path(apidoc.__file__).parent
BINANCE_PREFIXES = ("/api/v3/", "/sapi/", "/fapi/", "/dapi/")


@pytest.fixture(scope="module")
def described() -> dict[str, Any]:
    return create_app(Settings(dev_mode=True)).openapi()


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m.upper(), p): op for p, ops in doc["paths"].items() for m, op in ops.items()}


def names(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op.get("parameters", [])}


def test_every_binance_route_is_documented_and_nothing_else(described: dict[str, Any]) -> None:
    binance = {k for k in operations(described) if k[1].startswith(BINANCE_PREFIXES)}
    assert binance == set(apidoc.BINANCE)


def test_depth_and_order_list_their_parameters(described: dict[str, Any]) -> None:
    ops = operations(described)
    assert names(ops[("GET", "/api/v3/depth")]) == {"symbol", "limit"}
    assert names(ops[("POST", "/api/v3/order")]) >= {
        "symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price",
        "newClientOrderId", "stopPrice", "icebergQty", "goodTillDate", "newOrderRespType",
        "selfTradePreventionMode", "recvWindow", "timestamp"}
    for method in ("GET", "DELETE"):
        assert names(ops[(method, "/api/v3/order")]) >= {
            "symbol", "orderId", "origClientOrderId", "timestamp"}
    by_name = {p["name"]: p for p in ops[("POST", "/api/v3/order")]["parameters"]}
    assert by_name["symbol"]["required"] and by_name["side"]["required"]
    assert by_name["side"]["schema"]["enum"] == ["BUY", "SELL"]
    assert by_name["newOrderRespType"]["schema"]["enum"] == ["ACK", "RESULT", "FULL"]
    assert by_name["price"]["schema"]["pattern"] == r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
    assert by_name["timestamp"]["required"]


def test_every_parameter_a_binance_route_reads_is_documented(
    described: dict[str, Any],
) -> None:
    """The names the routes read (``p.get("x")``, ``optional_int(p, "x")``...) in each
    module all appear among the documented parameters of that module's operations."""
    ops = operations(described)
    documented = {name for k, op in ops.items() if k[1].startswith(BINANCE_PREFIXES)
                  for name in names(op)}
    read: set[str] = set()
    for module in ("trading.py", "market.py", "public.py", "wallet.py", "sapi.py",
                   "userstream.py"):
        text = (GATEWAY / module).read_text()
        read |= set(re.findall(r"""(?:params|p|query_params)\.get\(\s*"(\w+)\"""", text))
        read |= set(re.findall(r"""optional_\w+\(\s*\w+,\s*"(\w+)\"""", text))
        read |= set(re.findall(r"""_enum\(\s*\w+,\s*"(\w+)\"""", text))
    read -= {"signature"}  # a security scheme, not a parameter
    assert read - documented == set()
    prefixed = {f"{leg}{n}" for leg in ("above", "below")
                for n in ("Type", "Price", "StopPrice", "TimeInForce", "IcebergQty")}
    assert prefixed <= documented


def test_signed_operations_need_the_key_and_the_signature(described: dict[str, Any]) -> None:
    ops = operations(described)
    for key, spec in apidoc.BINANCE.items():
        op = ops[key]
        if spec.security == apidoc.SIGNED:
            assert op["security"] == [{"ApiKey": [], "Signature": []}], key
            assert {"timestamp", "recvWindow"} <= names(op), key
            assert "401" in op["responses"], key
        elif spec.security == apidoc.USER_STREAM:
            assert op["security"] == [{"ApiKey": []}], key
        else:
            assert op["security"] == [], key
    schemes = described["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header",
                                 "name": "X-MBX-APIKEY"}
    assert "HMAC-SHA256" in schemes["Signature"]["description"]
    assert "Ed25519" in schemes["Signature"]["description"]
    assert ops[("GET", "/admin/audit")]["security"] == [{"AdminToken": []}]
    assert ops[("GET", "/api/v1/user/me")]["security"] == [{"UserSession": []}]
    assert ops[("POST", "/api/v1/auth/login")]["security"] == []


def test_every_error_code_the_gateway_answers_is_documented(described: dict[str, Any]) -> None:
    used: set[int] = set()
    for source in GATEWAY.glob("*.py"):
        text = source.read_text()
        used |= {int(c) for c in re.findall(r"ApiError\(\s*(-\d{4})", text)}
        used |= {int(c) for c in re.findall(r"code, msg = (-\d{4})", text)}
        used |= {int(c) for c in re.findall(r'"code": (-\d{4})', text)}
        used |= {int(c) for c in re.findall(r"(-\d{4}) if name ==", text)}
        used |= {int(c) for c in re.findall(r"else (-\d{4})", text)}
    assert used, "no codes found: the patterns above no longer match the sources"
    assert used - set(apidoc.ERROR_CODES) == set()
    table = described["info"]["description"]
    for code in apidoc.ERROR_CODES:
        assert f"| {code} |" in table


def test_every_refusal_is_documented_in_the_error_format(described: dict[str, Any]) -> None:
    schemas = described["components"]["schemas"]
    assert schemas["Error"]["required"] == ["code", "msg"]
    assert "HTTPValidationError" not in schemas  # validation failures answer 400 -1102
    responses = described["components"]["responses"]
    for key, op in operations(described).items():
        assert "422" not in op["responses"], key
        assert "400" in op["responses"], key
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")):
                if "$ref" in answer:
                    answer = responses[answer["$ref"].rsplit("/", 1)[1]]
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (key, status)


def test_descriptions_are_written_for_clients(described: dict[str, Any]) -> None:
    internal = re.compile(r":(mod|func|class|meth):|``|tradeplane\.|fastpath|Raises:|"
                          r"control\.|SetTrading|settlement")
    for key, op in operations(described).items():
        for text in (op.get("summary", ""), op.get("description", "")):
            assert not internal.search(text), (key, text)
        assert op["summary"][0].isupper() and "_" not in op["summary"], key


def test_admin_operations_name_their_roles_and_body_fields(described: dict[str, Any]) -> None:
    from tests.integration.test_admin_rbac import ENDPOINTS

    assert {(m, p): a for m, p, a, _ in ENDPOINTS} == apidoc.ADMIN_ACTIONS
    ops = operations(described)
    assert "roles SuperAdmin." in ops[("POST", "/admin/credit")]["description"]
    schemas = described["components"]["schemas"]
    for name, fields in apidoc.BODY_FIELDS.items():
        for field in fields:
            assert schemas[name]["properties"][field]["description"], (name, field)


# --------------------------------------------------------------------------- served
@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(dev_mode=True)
    gateway = create_app(settings)
    install(gateway, guard_only())
    app = OrderFastPath(gateway, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway") as client:
        yield client


async def test_the_docs_page_and_its_files_come_from_the_gateway(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert "frame-ancestors 'none'" in csp
    for ref in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        asset = await http.get(f"/{ref}")
        assert asset.status_code == 200, ref
        assert "default-src 'self'" in asset.headers["content-security-policy"]
    js = await http.get("/static/docs.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    api = await http.get("/openapi.json")
    assert api.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("path", ["/redoc", "/static/nope.js", "/static/", "/docs/oauth2",
                                  "/nothing/here"])
async def test_unknown_paths_answer_code_and_msg(http: httpx.AsyncClient, path: str) -> None:
    r = await http.get(path)
    assert r.status_code == 404
    assert r.json() == {"code": -1020, "msg": "This operation is not supported."}
