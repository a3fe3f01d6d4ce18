"""The gateway's API reference: the OpenAPI description at ``/openapi.json`` and the page
that renders it at ``/docs`` (Swagger UI, vendored under ``static/vendor``: no CDN, so it
works without internet; ``static/vendor/LOCK.json`` records the version and hashes).

FastAPI derives the description from the routes, but the Binance routes read their
parameters from the raw query string and form body (one parser, ``inputs.py``), so it
sees none of them, nor their security. :func:`describe` completes the generated document:
every Binance operation's parameters (Binance's names, formats and ranges), its security
(``X-MBX-APIKEY``, the signature), the error model with the codes we answer, the admin
roles and body fields, and descriptions written for clients. Parameters of Binance's
POST/PUT/DELETE endpoints are documented in the query string, where Binance accepts them
too (the form body works as well).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from tradeplane.domain.access import PERMISSION_MATRIX, Role
from tradeplane.domain.access import AdminAction as A
from tradeplane.domain.escrow import DealState
from tradeplane.gateway.inputs import INT64_MAX
from tradeplane.gateway.market import KLINE_INTERVALS
from tradeplane.gateway.ratelimit import route_cost
from tradeplane.usecases.convert import CODES as CONVERT_CODES
from tradeplane.usecases.escrow import CODES as ESCROW_CODES

Schema = dict[str, Any]

STATIC_PATH: Final = "/static"
#: Where the page's assets are, inside the installed package.
STATIC_DIR: Final = resources.files("tradeplane.gateway") / "static"

# --------------------------------------------------------------------------- value formats
#: Binance's decimal format (prices, quantities, amounts): ASCII digits, at most 20 on
#: each side of the point.
DECIMAL: Final[Schema] = {"type": "string", "pattern": r"^([0-9]{1,20})(\.[0-9]{1,20})?$"}
SYMBOL: Final[Schema] = {"type": "string", "pattern": r"^[A-Za-z0-9\-]{1,32}$"}
#: A JSON array of symbols, as Binance takes ``symbols``: ``["BTCUSDT","ETHUSDT"]``.
SYMBOLS: Final[Schema] = {
    "type": "string", "pattern": r'^\["[A-Z0-9]{1,32}"(,"[A-Z0-9]{1,32}"){0,99}\]$'}
CLIENT_ID: Final[Schema] = {"type": "string", "pattern": r"^[a-zA-Z0-9\-_]{1,36}$"}
ID: Final[Schema] = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
#: Milliseconds since the Unix epoch, up to the end of year 9999.
TIME_MS: Final[Schema] = {"type": "integer", "minimum": 0, "maximum": 253_402_300_799_999}
ASSET: Final[Schema] = {"type": "string", "pattern": r"^[A-Za-z0-9]{1,20}$"}

SIDES: Final = ["BUY", "SELL"]
ORDER_TYPES: Final = ["LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT",
                      "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]
OCO_TYPES: Final = ["LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                    "TAKE_PROFIT_LIMIT"]
TIME_IN_FORCE: Final = ["GTC", "IOC", "FOK", "GTD"]
RESPONSE_TYPES: Final = ["ACK", "RESULT", "FULL"]
STP_MODES: Final = ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]


def _enum(values: list[str]) -> Schema:
    return {"type": "string", "enum": values}


def _limit(default: int, most: int) -> Schema:
    return {"type": "integer", "minimum": 1, "maximum": most, "default": default}


@dataclass(frozen=True)
class Param:
    """One query parameter of a Binance operation."""

    name: str
    schema: Schema
    description: str
    required: bool = False
    example: Any = None

    def openapi(self) -> Schema:
        doc: Schema = {"name": self.name, "in": "query", "required": self.required,
                       "description": self.description, "schema": dict(self.schema)}
        if self.example is not None:
            doc["example"] = self.example
        return doc


# Security of a Binance operation, as Binance names it.
NONE, USER_STREAM, SIGNED = "NONE", "USER_STREAM", "SIGNED"


@dataclass(frozen=True)
class Op:
    """What a client needs to know about one Binance operation."""

    summary: str
    description: str = ""
    params: tuple[Param, ...] = ()
    security: str = NONE
    permission: str = ""  # SIGNED: the key permission it needs (read, trade, withdraw)
    weight: str = ""  # when it depends on the parameters; else route_cost's
    codes: tuple[int, ...] = field(default=())  # the 4xx codes beyond the common ones
    example: Any = None  # an answer, as shown in the reference


# --------------------------------------------------------------------------- parameters
def _symbol(required: bool = True, what: str = "The pair, e.g. `BTCUSDT`.") -> Param:
    return Param("symbol", SYMBOL, what, required, "BTCUSDT" if required else None)


def _symbols() -> tuple[Param, Param]:
    return (_symbol(False, "One pair; its document alone is answered."),
            Param("symbols", SYMBOLS, 'Several pairs, a JSON array: `["BTCUSDT","ETHBTC"]` '
                  "(URL-encoded). Not with `symbol`; without either, every pair."))


def _times(what: str = "") -> tuple[Param, Param]:
    return (Param("startTime", TIME_MS, f"From this time (ms, inclusive){what}."),
            Param("endTime", TIME_MS, f"Up to this time (ms, inclusive){what}."))


def _find_order(verb: str) -> tuple[Param, Param]:
    return (Param("orderId", ID, f"The order to {verb} (this or `origClientOrderId`)."),
            Param("origClientOrderId", CLIENT_ID, f"The order to {verb}, by the client "
                  "order id it was placed with."))


NEW_CLIENT_ID: Final = Param(
    "newClientOrderId", CLIENT_ID,
    "Your id for the order (unique among your open orders); a random one when absent.")
RESP_TYPE: Final = Param(
    "newOrderRespType", _enum(RESPONSE_TYPES),
    "`ACK`: as soon as the order is stored and queued for its engine. `RESULT`: once "
    "it was processed, with its status. `FULL`: RESULT plus its fills. Default: FULL for "
    "LIMIT and MARKET orders, ACK for the others.")
STP: Final = Param(
    "selfTradePreventionMode", _enum(STP_MODES),
    "What happens when this order would trade with another of your orders: `NONE` "
    "trades; `EXPIRE_TAKER`, `EXPIRE_MAKER`, `EXPIRE_BOTH` expire that side "
    "(status `EXPIRED_IN_MATCH`). Default: the pair's.")
TRADE_CODES: Final = (-1013, -1014, -1102, -1106, -1115, -1116, -1117, -1121, -1130, -2010)


def _leg(prefix: str, side_note: str) -> tuple[Param, ...]:
    return (
        Param(f"{prefix}Type", _enum(OCO_TYPES), f"The {prefix} order's type. {side_note}",
              True),
        Param(f"{prefix}ClientOrderId", CLIENT_ID, f"Your id for the {prefix} order."),
        Param(f"{prefix}Price", DECIMAL, f"The {prefix} order's limit price "
              "(LIMIT_MAKER and *_LIMIT types)."),
        Param(f"{prefix}StopPrice", DECIMAL, f"The {prefix} order's trigger price "
              "(STOP_LOSS*, TAKE_PROFIT* types)."),
        Param(f"{prefix}TimeInForce", _enum(TIME_IN_FORCE[:3]),
              f"The {prefix} order's time in force (*_LIMIT types)."),
        Param(f"{prefix}IcebergQty", DECIMAL, f"Visible part of the {prefix} order "
              "(limit-priced, GTC)."),
    )


WALLET_WINDOW: Final = _times("; the window is at most 90 days, the last 90 by default")
WALLET_PAGING: Final = (
    Param("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000},
          "Records to skip.", example=None),
    Param("limit", _limit(1000, 1000), "Records to answer."),
)

# --------------------------------------------------------------------------- example answers
_ORDER: Final[Schema] = {
    "symbol": "BTCUSDT", "orderId": 28, "orderListId": -1,
    "clientOrderId": "6gCrw2kRUAF9CvJDGP16IP", "price": "50000.00000000",
    "origQty": "0.01000000", "executedQty": "0.01000000",
    "cummulativeQuoteQty": "499.90000000", "status": "FILLED", "timeInForce": "GTC",
    "type": "LIMIT", "side": "BUY", "workingTime": 1700000000000,
    "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "NONE",
}
ORDER_EXAMPLE: Final[Schema] = {
    **_ORDER, "transactTime": 1700000000000,
    "fills": [{"price": "49990.00000000", "qty": "0.01000000", "commission": "0.00001000",
               "commissionAsset": "BTC", "tradeId": 56}],
}
QUERY_ORDER_EXAMPLE: Final[Schema] = {
    **_ORDER, "stopPrice": "0.00000000", "icebergQty": "0.00000000",
    "time": 1700000000000, "updateTime": 1700000000000, "isWorking": True,
}

#: A new order's parameters (``POST /api/v3/order``, its test and cancel-replace).
NEW_ORDER_PARAMS: Final = (
    _symbol(), Param("side", _enum(SIDES), "", True, "BUY"),
    Param("type", _enum(ORDER_TYPES), "", True, "LIMIT"),
    Param("timeInForce", _enum(TIME_IN_FORCE), "GTC good till canceled, IOC immediate "
          "or cancel, FOK fill or kill, GTD good till `goodTillDate`.",
          example="GTC"),
    Param("quantity", DECIMAL, "In the base asset.", example="0.01"),
    Param("quoteOrderQty", DECIMAL, "MARKET only: spend (BUY) or receive (SELL) this "
          "much quote asset instead of a `quantity`."),
    Param("price", DECIMAL, "Limit price.", example="50000"),
    NEW_CLIENT_ID,
    Param("stopPrice", DECIMAL, "Trigger price of the STOP_LOSS* and TAKE_PROFIT* "
          "types: the order waits off the book until the last trade price reaches it."),
    Param("icebergQty", DECIMAL, "Limit-priced GTC orders: show only this much of the "
          "quantity on the book at a time."),
    Param("goodTillDate", TIME_MS, "With `timeInForce=GTD`: when the order expires (ms, "
          "in the future)."),
    RESP_TYPE, STP,
)

# --------------------------------------------------------------------------- Binance operations
BINANCE: Final[dict[tuple[str, str], Op]] = {
    ("GET", "/api/v3/ping"): Op("Test connectivity", "Answers `{}`."),
    ("GET", "/api/v3/time"): Op("Server time", "`{\"serverTime\": <ms>}`.",
        example={"serverTime": 1700000000000}),
    ("GET", "/api/v3/exchangeInfo"): Op(
        "Exchange information",
        "Rate limits and every pair with its status, precision and filters (PRICE_FILTER, "
        "LOT_SIZE, NOTIONAL, ICEBERG_PARTS, PERCENT_PRICE_BY_SIDE...).",
        _symbols(), codes=(-1121, -1100)),
    ("GET", "/api/v3/depth"): Op(
        "Order book",
        "Bids and asks as `[price, quantity]`, best first, with `lastUpdateId` (the last "
        "engine command the book includes; a diff stream's events follow it).",
        (_symbol(), Param("limit", {"type": "integer", "minimum": 1, "maximum": 5000,
                                    "default": 100},
                          "Levels per side; above 5000 is taken as 5000.")),
        weight="5 up to limit 100, 25 up to 500, 50 up to 1000, 250 above",
        codes=(-1102, -1121, -1100),
        example={"lastUpdateId": 1027024,
                 "bids": [["49990.00000000", "0.43100000"]],
                 "asks": [["50010.00000000", "0.12000000"]]}),
    ("GET", "/api/v3/trades"): Op(
        "Recent trades", "The latest trades, oldest first.",
        (_symbol(), Param("limit", _limit(500, 1000), "How many.")), codes=(-1102, -1121),
        example=[{"id": 56,
                  "price": "49990.00000000",
                  "qty": "0.01000000",
                  "quoteQty": "499.90000000",
                  "time": 1700000000000,
                  "isBuyerMaker": False,
                  "isBestMatch": True}]),
    ("GET", "/api/v3/historicalTrades"): Op(
        "Older trades", "Settled trades from `fromId` on, else the latest `limit`.",
        (_symbol(), Param("limit", _limit(500, 1000), "How many."),
         Param("fromId", ID, "The first trade id to answer.")), codes=(-1102, -1121)),
    ("GET", "/api/v3/aggTrades"): Op(
        "Aggregate trades",
        "Trades of one taker order at one price, aggregated; from `fromId`, or within "
        "`startTime`..`endTime`, else the latest `limit`; oldest first.",
        (_symbol(), Param("fromId", ID, "The first aggregate trade id."), *_times(),
         Param("limit", _limit(500, 1000), "How many.")), codes=(-1102, -1121)),
    ("GET", "/api/v3/klines"): Op(
        "Candlesticks",
        "Candles by open time (UTC-aligned), oldest first: `[openTime, open, high, low, "
        "close, volume, closeTime, quoteVolume, trades, takerBuyVolume, "
        "takerBuyQuoteVolume, \"0\"]`. Only intervals with trades have a candle.",
        (_symbol(), Param("interval", _enum(list(KLINE_INTERVALS)), "Candle length.", True,
                          "1m"),
         *_times(" of the candle's open"), Param("limit", _limit(500, 1000), "How many.")),
        codes=(-1102, -1120, -1121),
        example=[[1700000000000,
                  "49900.00000000",
                  "50100.00000000",
                  "49800.00000000",
                  "49990.00000000",
                  "1.20000000",
                  1700000059999,
                  "59988.00000000",
                  12,
                  "0.70000000",
                  "34993.00000000",
                  "0"]]),
    ("GET", "/api/v3/uiKlines"): Op(
        "Candlesticks (UI)", "The same candles as `klines`.",
        (_symbol(), Param("interval", _enum(list(KLINE_INTERVALS)), "Candle length.", True,
                          "1m"),
         *_times(" of the candle's open"), Param("limit", _limit(500, 1000), "How many.")),
        codes=(-1102, -1120, -1121)),
    ("GET", "/api/v3/ticker/24hr"): Op(
        "Rolling 24h statistics",
        "Rolling 24-hour price change statistics; `type=MINI` leaves out the book and "
        "change fields. One document for `symbol`, else an array.",
        (*_symbols(), Param("type", _enum(["FULL", "MINI"]), "Default FULL.")),
        weight="2 with `symbol`, else 80", codes=(-1100, -1121, -1128)),
    ("GET", "/api/v3/ticker/price"): Op(
        "Last price", "The last trade price; one document for `symbol`, else an array.",
        _symbols(), weight="2 with `symbol`, else 4", codes=(-1100, -1121, -1128),
        example={"symbol": "BTCUSDT", "price": "49990.00000000"}),
    ("GET", "/api/v3/ticker/bookTicker"): Op(
        "Best bid and ask", "Best bid and ask with their quantities; one document for "
        "`symbol`, else an array.",
        _symbols(), weight="2 with `symbol`, else 4", codes=(-1100, -1121, -1128),
        example={"symbol": "BTCUSDT",
                 "bidPrice": "49990.00000000",
                 "bidQty": "0.43100000",
                 "askPrice": "50010.00000000",
                 "askQty": "0.12000000"}),
    ("GET", "/api/v3/avgPrice"): Op(
        "Average price", "Volume-weighted price of the last 5 minutes (the last price when "
        "nothing traded).", (_symbol(),), codes=(-1102, -1121),
        example={"mins": 5, "price": "49995.00000000", "closeTime": 1700000000000}),
    # ----------------------------------------------------------------------- trading
    ("POST", "/api/v3/order"): Op(
        "New order",
        "Funds are locked before the order exists: a BUY holds its notional in the quote "
        "asset, a SELL its quantity in the base asset. Mandatory by type: LIMIT `timeInForce`, "
        "`quantity`, `price`; MARKET `quantity` or `quoteOrderQty`; LIMIT_MAKER `quantity`, "
        "`price`; STOP_LOSS and TAKE_PROFIT `quantity`, `stopPrice`; STOP_LOSS_LIMIT and "
        "TAKE_PROFIT_LIMIT `timeInForce`, `quantity`, `price`, `stopPrice`. Prices and "
        "quantities must satisfy the pair's filters (`exchangeInfo`). Counts against the "
        "order rate limits (`X-MBX-ORDER-COUNT-10S`, `-1D`).",
        NEW_ORDER_PARAMS,
        SIGNED, "trade", codes=(*TRADE_CODES, -1100),
        example=ORDER_EXAMPLE),
    ("POST", "/api/v3/order/test"): Op(
        "Test new order", "Checks a new order as `POST /api/v3/order` would (every "
        "parameter, filter and the market's state) without placing it: answers `{}`.",
        NEW_ORDER_PARAMS, SIGNED, "trade", codes=(*TRADE_CODES, -1100), example={}),
    ("POST", "/api/v3/order/cancelReplace"): Op(
        "Cancel an order and replace it",
        "Cancels an open order (`cancelOrderId` or `cancelOrigClientOrderId`), then places "
        "a new one from the new order's parameters (as `POST /api/v3/order`). The cancel "
        "is settled first, so the new order may use the funds the old one held. "
        "`cancelReplaceMode` STOP_ON_FAILURE: a failed cancel places nothing; "
        "ALLOW_FAILURE: the new order is placed anyway. When both succeed: "
        "`cancelResult`, `newOrderResult` (`SUCCESS`), `cancelResponse` (as `DELETE "
        "/api/v3/order`) and `newOrderResponse` (as `POST /api/v3/order`). Otherwise "
        "-2022 (HTTP 400: the cancel failed, and the new order was not attempted or failed "
        "too) or -2021 (HTTP 409: one of them failed) with the same four fields in `data`, "
        "a failed half as its `{code, msg}`, one not attempted as `NOT_ATTEMPTED`/null. "
        "Counts as one new order.",
        (Param("cancelReplaceMode", _enum(["STOP_ON_FAILURE", "ALLOW_FAILURE"]), "", True,
               "STOP_ON_FAILURE"),
         Param("cancelOrderId", ID, "The order to cancel (this or "
               "`cancelOrigClientOrderId`)."),
         Param("cancelOrigClientOrderId", CLIENT_ID, "The order to cancel, by its client "
               "order id."),
         Param("cancelNewClientOrderId", CLIENT_ID, "An id for the cancellation (the "
               "canceled order's `clientOrderId` in `cancelResponse`)."),
         *NEW_ORDER_PARAMS),
        SIGNED, "trade",
        codes=(*TRADE_CODES, -1100, -2011, -2021, -2022)),
    ("GET", "/api/v3/order"): Op(
        "Query order", "An order of yours, open or finished.",
        (_symbol(), *_find_order("query")), SIGNED, "read", codes=(-1102, -1121, -2013),
        example=QUERY_ORDER_EXAMPLE),
    ("DELETE", "/api/v3/order"): Op(
        "Cancel order", "Cancels an open order; its remaining hold is released.",
        (_symbol(), *_find_order("cancel"),
         Param("newClientOrderId", CLIENT_ID, "An id for this cancellation (answered as "
               "`clientOrderId`).")),
        SIGNED, "trade", codes=(-1102, -1121, -2011)),
    ("PUT", "/api/v3/order/amend/keepPriority"): Op(
        "Amend order (keep priority)",
        "Reduces an open order's quantity without losing its place in the queue; the order "
        "gets `newClientOrderId` (or a random one). An increase is refused.",
        (_symbol(), *_find_order("amend"),
         Param("newQty", DECIMAL, "The new, smaller quantity.", True),
         Param("newClientOrderId", CLIENT_ID, "The order's new client order id.")),
        SIGNED, "trade", codes=(-1013, -1102, -1121, -2013, -2038)),
    ("GET", "/api/v3/openOrders"): Op(
        "Open orders", "Your open orders, of one pair or of all.",
        (_symbol(False, "One pair; without it, every pair."),), SIGNED, "read",
        weight="6 with `symbol`, else 80", codes=(-1121,)),
    ("DELETE", "/api/v3/openOrders"): Op(
        "Cancel all open orders", "Cancels every open order of yours on one pair.",
        (_symbol(),), SIGNED, "trade", codes=(-1121, -2011)),
    ("GET", "/api/v3/allOrders"): Op(
        "All orders", "Your orders on one pair, open or finished, from `orderId` on or "
        "within the times.",
        (_symbol(), Param("orderId", ID, "From this order id on."), *_times(),
         Param("limit", _limit(500, 1000), "How many.")), SIGNED, "read", codes=(-1121,)),
    ("GET", "/api/v3/myTrades"): Op(
        "Account trades", "Your trades on one pair, with their commission.",
        (_symbol(), Param("orderId", ID, "Only this order's trades."),
         Param("fromId", ID, "From this trade id on."), *_times(),
         Param("limit", _limit(500, 1000), "How many.")), SIGNED, "read", codes=(-1121,)),
    ("GET", "/api/v3/account"): Op(
        "Account information", "Balances (free and locked), commission rates and what the "
        "key may do.", (), SIGNED, "read",
        example={"makerCommission": 10,
                 "takerCommission": 10,
                 "canTrade": True,
                 "canWithdraw": False,
                 "canDeposit": True,
                 "updateTime": 1700000000000,
                 "accountType": "SPOT",
                 "balances": [{"asset": "BTC", "free": "0.01000000", "locked": "0.00000000"},
                              {"asset": "USDT", "free": "9500.10000000", "locked": "0.00000000"}],
                 "permissions": ["SPOT"],
                 "uid": 1000}),
    ("POST", "/api/v3/orderList/oco"): Op(
        "New OCO order list",
        "Two orders of one side and quantity, an above and a below one, of which at most "
        "one executes: when either fills or is canceled, the other is canceled. A SELL list "
        "takes profit (or rests a LIMIT_MAKER) above and stops the loss below; a BUY list "
        "the mirror image. One hold covers both. Counts two orders.",
        (_symbol(), Param("listClientOrderId", CLIENT_ID, "Your id for the list."),
         Param("side", _enum(SIDES), "", True, "SELL"),
         Param("quantity", DECIMAL, "Both orders' quantity.", True, "0.01"),
         *_leg("above", "SELL: LIMIT_MAKER or TAKE_PROFIT*; BUY: STOP_LOSS*."),
         *_leg("below", "SELL: STOP_LOSS*; BUY: LIMIT_MAKER or TAKE_PROFIT*."),
         Param("newOrderRespType", _enum(RESPONSE_TYPES), "Default RESULT."), STP),
        SIGNED, "trade",
        codes=(*TRADE_CODES, -1158, -1165, -1166, -1168, -1196, -1197, -1198, -1199)),
    ("GET", "/api/v3/orderList"): Op(
        "Query order list", "An OCO list of yours, by `orderListId` or its client id.",
        (Param("orderListId", ID, "The list (this or `origClientOrderId`)."),
         Param("origClientOrderId", CLIENT_ID, "The list's `listClientOrderId`.")),
        SIGNED, "read", codes=(-1102, -2013)),
    ("DELETE", "/api/v3/orderList"): Op(
        "Cancel order list", "Cancels both orders of an OCO list.",
        (_symbol(), Param("orderListId", ID, "The list (this or `listClientOrderId`)."),
         Param("listClientOrderId", CLIENT_ID, "The list, by its client id."),
         Param("newClientOrderId", CLIENT_ID, "An id for this cancellation.")),
        SIGNED, "trade", codes=(-1102, -1121, -2011)),
    ("GET", "/api/v3/openOrderList"): Op(
        "Open order lists", "Your OCO lists still executing.", (), SIGNED, "read"),
    # ----------------------------------------------------------------------- user data stream
    ("POST", "/api/v3/userDataStream"): Op(
        "Start user data stream",
        "The key's listen key (its live one, renewed, or a new one), valid 60 minutes. "
        "Connect to `/ws/<listenKey>` for `executionReport`, `outboundAccountPosition`, "
        "`listenKeyExpired` and (ours) `convertOrderUpdate` after a Convert acceptance and "
        "`escrowDealUpdate` on each change of an escrowed deal of yours.", (), USER_STREAM,
        example={"listenKey": "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"}),
    ("PUT", "/api/v3/userDataStream"): Op(
        "Keep user data stream alive", "Extends the listen key's validity to 60 minutes "
        "from now.", (Param("listenKey", {"type": "string", "pattern": "^[A-Za-z0-9]{60}$"},
                            "The listen key.", True),), USER_STREAM, codes=(-1102, -1125)),
    ("DELETE", "/api/v3/userDataStream"): Op(
        "Close user data stream", "Closes the listen key and its sockets.",
        (Param("listenKey", {"type": "string", "pattern": "^[A-Za-z0-9]{60}$"},
               "The listen key.", True),), USER_STREAM, codes=(-1102, -1125)),
    # ----------------------------------------------------------------------- sapi, futures
    ("GET", "/sapi/v1/system/status"): Op(
        "System status", "`{\"status\": 0, \"msg\": \"normal\"}`, or status 1 \"system "
        "maintenance\" while an operator's kill switch halts all trading.",
        example={"status": 0, "msg": "normal"}),
    ("GET", "/sapi/v1/asset/tradeFee"): Op(
        "Trade fees", "Maker and taker commission of one pair or of every pair.",
        (_symbol(False, "One pair; without it, every pair."),), SIGNED, "read",
        codes=(-1121,),
        example=[{"symbol": "BTCUSDT", "makerCommission": "0.001", "takerCommission": "0.001"}]),
    ("GET", "/sapi/v1/spot/delist-schedule"): Op(
        "Delisting schedule", "Always empty: no delisting is ever scheduled here.", (),
        SIGNED, "read"),
    ("GET", "/sapi/v1/margin/allPairs"): Op(
        "Cross-margin pairs", "Always empty: spot only."),
    ("GET", "/sapi/v1/margin/isolated/allPairs"): Op(
        "Isolated-margin pairs", "Always empty: spot only.", (), SIGNED, "read"),
    ("GET", "/fapi/v1/exchangeInfo"): Op(
        "USDS-M futures exchange information", "No symbols: spot only."),
    ("GET", "/dapi/v1/exchangeInfo"): Op(
        "COIN-M futures exchange information", "No symbols: spot only."),
    ("GET", "/sapi/v1/accountSnapshot"): Op(
        "Daily account snapshot", "Your spot account as it was each UTC day: balances and "
        "their total in BTC, valued at the books' last prices, the newest `limit` days of "
        "the window, oldest first. `MARGIN` and `FUTURES` answer no snapshots (spot only).",
        (Param("type", {"type": "string", "enum": ["SPOT", "MARGIN", "FUTURES"]},
               "The account type.", True, "SPOT"),
         *_times("; at most 30 days apart, the last 30 days by default"),
         Param("limit", {"type": "integer", "minimum": 7, "maximum": 30, "default": 7},
               "How many days.")),
        SIGNED, "read", codes=(-1100, -1127, -1128),
        example={"code": 200, "msg": "", "snapshotVos": [
            {"type": "spot", "updateTime": 1576281599000,
             "data": {"totalAssetOfBtc": "0.09942700",
                      "balances": [{"asset": "BTC", "free": "0.09905021",
                                    "locked": "0.00000000"}]}}]}),
    ("GET", "/sapi/v1/capital/config/getall"): Op(
        "All coins", "Every coin (traded, with a wallet, or held by you) with your free, "
        "locked and withdrawing balance and its networks: one per wallet, with its fee, "
        "minimum and confirmations; the first is the default.", (), SIGNED, "read"),
    ("GET", "/sapi/v1/capital/deposit/address"): Op(
        "Deposit address", "Your deposit address for a coin (made on first use).",
        (Param("coin", ASSET, "The coin, e.g. `LTC`.", True, "LTC"),
         Param("network", ASSET, "The network (default: the coin's first).")),
        SIGNED, "read", codes=(-1001, -4018),
        example={"address": "rltc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
                 "coin": "LTC",
                 "tag": "",
                 "url": ""}),
    ("GET", "/sapi/v1/capital/deposit/hisrec"): Op(
        "Deposit history", "Your deposits, newest first. Status: 0 pending, 6 credited but "
        "not yet withdrawable, 1 success.",
        (Param("coin", ASSET, "Only this coin."),
         Param("status", {"type": "integer", "minimum": 0, "maximum": 9}, "Only this status."),
         *WALLET_WINDOW, *WALLET_PAGING,
         Param("txId", {"type": "string", "pattern": "^[0-9A-Fa-f]{1,128}$"},
               "Only this transaction.")),
        SIGNED, "read", codes=(-1100, -4047)),
    ("POST", "/sapi/v1/capital/withdraw/apply"): Op(
        "Withdraw", "Requests a withdrawal: the amount plus the network's fee are locked at "
        "once; the wallet sends it (after an administrator's approval above the wallet's "
        "threshold). Answers the withdrawal's `id`.",
        (Param("coin", ASSET, "The coin.", True, "LTC"),
         Param("network", ASSET, "The network (default: the coin's first)."),
         Param("address", {"type": "string", "pattern": "^[A-Za-z0-9]{1,128}$"},
               "Where to send it (on your whitelist, when the wallet requires one).", True),
         Param("amount", DECIMAL, "How much, before the fee.", True),
         Param("withdrawOrderId", {"type": "string", "pattern": r"^[A-Za-z0-9._\-]{1,64}$"},
               "Your id for the withdrawal (unique)."),
         Param("totpCode", {"type": "string", "pattern": "^[0-9A-Za-z]{6,32}$"},
               "Your 2FA code, once the account's owner enabled 2FA (not Binance's).")),
        SIGNED, "withdraw",
        codes=(-1001, -1002, -1100, -1102, -4001, -4018, -4019, -4021, -4022, -4026, -4033,
               -4035),
        example={"id": "7"}),
    ("GET", "/sapi/v1/capital/withdraw/history"): Op(
        "Withdrawal history", "Your withdrawals, newest first, with Binance's status "
        "codes (0 email sent, 1 canceled, 2 awaiting approval, 3 rejected, 4 processing, "
        "5 failure, 6 completed).",
        (Param("coin", ASSET, "Only this coin."),
         Param("withdrawOrderId", {"type": "string", "pattern": r"^[A-Za-z0-9._\-]{1,64}$"},
               "Only this withdrawal, by your id."),
         Param("status", {"type": "integer", "minimum": 0, "maximum": 9}, "Only this status."),
         *WALLET_PAGING,
         Param("idList", {"type": "string", "pattern": "^[0-9]{1,19}(,[0-9]{1,19}){0,99}$"},
               "Only these withdrawal ids, comma-separated."),
         *WALLET_WINDOW),
        SIGNED, "read", codes=(-1100, -4047)),
}

_CONVERT_ASSET: Final = ASSET
BINANCE.update({
    ("GET", "/sapi/v1/convert/exchangeInfo"): Op(
        "Convert pairs", "Every convertible pair (direct, or through a bridge asset) "
        "matching `fromAsset` / `toAsset` (both optional), with the from-amount's range "
        "(the first leg's pair limits) and the to-amount's (its maximum is the convert "
        "desk's inventory); `fromIsBase` says whether the from-asset is the base of the "
        "first leg's pair.",
        (Param("fromAsset", _CONVERT_ASSET, "Only from this asset."),
         Param("toAsset", _CONVERT_ASSET, "Only to this asset.")), codes=(-1100,),
        example=[{"fromAsset": "BTC", "toAsset": "USDT", "fromAssetMinAmount": "0.00001000",
                  "fromAssetMaxAmount": "9000.00000000", "toAssetMinAmount": "5.00000000",
                  "toAssetMaxAmount": "100000.00000000", "fromIsBase": True}]),
    ("GET", "/sapi/v1/convert/assetInfo"): Op(
        "Convert assets", "Every convertible asset and its precision (`fraction`).", (),
        SIGNED, "read", example=[{"asset": "BTC", "fraction": 8}]),
    ("POST", "/sapi/v1/convert/getQuote"): Op(
        "Convert quote", "A firm quote, valid until `validTimestamp`, for exactly one of "
        "`fromAmount` / `toAmount`, only when your balance covers the from-amount and the "
        "desk's inventory the to-amount. The router walks the depth of every route "
        "(direct and through each bridge asset) with the taker fees, takes the best and "
        "the desk's spread. Beyond Binance's fields: `route` (each leg's book, side, "
        "amounts, fee, best and worst price), `priceImpact` (a fraction, fees excluded) "
        "and `fee` (taker fees and spread, in `feeAsset`).",
        (Param("fromAsset", _CONVERT_ASSET, "The asset you give.", True, "BTC"),
         Param("toAsset", _CONVERT_ASSET, "The asset you get.", True, "USDT"),
         Param("fromAmount", DECIMAL, "How much you give (or `toAmount`)."),
         Param("toAmount", DECIMAL, "How much you get (or `fromAmount`)."),
         Param("walletType", _enum(["SPOT", "FUNDING", "SPOT_FUNDING"]),
               "Accepted; every balance here is spot."),
         Param("validTime", _enum(["10s", "30s", "1m", "2m"]),
               "How long the quote is firm (default 10s).")),
        SIGNED, "convert", codes=(-1100, -1102, -1128, -1130, -23001, -23002, -23003,
                                  -23004, -23007),
        example={"quoteId": "12", "ratio": "19900.00000000", "inverseRatio": "0.00005025",
                 "validTimestamp": 1_700_000_010_000, "toAmount": "1990.00000000",
                 "fromAmount": "0.10000000"}),
    ("POST", "/sapi/v1/convert/acceptQuote"): Op(
        "Accept a convert quote", "One ledger transaction against the convert desk: "
        "`SUCCESS`, or a refusal with nothing changed. Accepting the same quote again "
        "answers the same order (it is converted once).",
        (Param("quoteId", {"type": "string", "pattern": "^[0-9]{1,19}$"},
               "The quote's id.", True),),
        SIGNED, "convert", codes=(-1100, -1102, -23003, -23004, -23005, -23006),
        example={"orderId": "7", "createTime": 1_700_000_001_000,
                 "orderStatus": "SUCCESS"}),
    ("GET", "/sapi/v1/convert/orderStatus"): Op(
        "Convert order status", "One of your convert orders, by `orderId` or `quoteId`. "
        "`orderStatus` is the user's side (SUCCESS from acceptance on); ours, "
        "`routingStatus`, is the desk's hedge: PENDING, ROUTING, ROUTING_COMPLETE, "
        "CONFIRMED or FAILED (followed live on `/ws/convert/<orderId>?listenKey=<key>`).",
        (Param("orderId", {"type": "string", "pattern": "^[0-9]{1,19}$"}, "The order."),
         Param("quoteId", {"type": "string", "pattern": "^[0-9]{1,19}$"}, "Its quote.")),
        SIGNED, "read", codes=(-1100, -1102, -23008)),
    ("GET", "/sapi/v1/convert/tradeFlow"): Op(
        "Convert trade history", "Your convert orders created in the window, oldest "
        "first; `moreData` when more exist beyond `limit`.",
        (*_times("; at most 30 days apart, both required"),
         Param("limit", _limit(100, 1000), "How many.")),
        SIGNED, "read", codes=(-1100, -1102, -1127)),
})

_DEAL_ID: Final = Param("dealId", {"type": "string", "pattern": "^[0-9]{1,19}$"},
                        "The deal.", True, "7")
_REQUEST_ID: Final = Param(
    "requestId", CLIENT_ID, "Your id for this request: the same request again (same deal, "
    "same id) answers the deal without doing anything again; without one, a repeat meets "
    "the state the first left (-24003).")
_DEAL_EXAMPLE: Final[Schema] = {
    "dealId": 7, "clientDealId": "buy-btc-1", "seller": 1001, "buyer": 1002,
    "asset": "BTC", "amount": "0.10000000", "priceAsset": "EUR", "price": "5000.00000000",
    "state": "FUNDED", "deadline": 1_700_001_800_000, "fundTimeout": 900,
    "payTimeout": 1800, "createTime": 1_700_000_000_000, "updateTime": 1_700_000_000_500,
    "side": "BUYER"}
_MOVE_CODES: Final = (-1100, -1102, -24001, -24002, -24003, -24006)


def _deal_move(summary: str, text: str, *extra: Param, codes: tuple[int, ...] = ()) -> Op:
    return Op(summary, text, (_DEAL_ID, _REQUEST_ID, *extra), SIGNED, "escrow",
              codes=(*_MOVE_CODES, *codes), example=_DEAL_EXAMPLE)


BINANCE.update({
    ("POST", "/sapi/v1/escrow/deal"): Op(
        "Open an escrowed deal", "Not Binance's: ours. As the buyer, ask account `seller` "
        "for `amount` of `asset` at `price` of `priceAsset`, paid off the platform. The "
        "deal is CREATED (nothing locked) until the seller funds it, and expires after "
        "`fundTimeout` seconds unfunded. States: CREATED, FUNDED, PAID, RELEASED, "
        "CANCELLED, EXPIRED, DISPUTED, RESOLVED_RELEASE, RESOLVED_REFUND; each change is "
        "pushed to both parties' user data streams as `escrowDealUpdate`. The same "
        "`clientDealId` again answers the same deal.",
        (Param("seller", ID, "The seller's account.", True, 1001),
         Param("asset", ASSET, "What the seller delivers (held on the platform).", True,
               "BTC"),
         Param("amount", DECIMAL, "How much of it.", True, "0.1"),
         Param("priceAsset", ASSET, "The currency of the price (e.g. `EUR`).", True, "EUR"),
         Param("price", DECIMAL, "The price of the whole amount, paid off the platform.",
               True, "5000"),
         Param("fundTimeout", {"type": "integer", "minimum": 1, "maximum": 2_592_000,
                               "default": 900},
               "Seconds the seller has to fund the deal."),
         Param("payTimeout", {"type": "integer", "minimum": 1, "maximum": 2_592_000,
                              "default": 1800},
               "Seconds the buyer has, once funded, to mark it paid; then the asset goes "
               "back to the seller (EXPIRED)."),
         Param("clientDealId", CLIENT_ID, "Your id for the deal (unique among yours).")),
        SIGNED, "escrow", codes=(-1100, -1102, -24005), example={
            **_DEAL_EXAMPLE, "state": "CREATED"}),
    ("POST", "/sapi/v1/escrow/deal/fund"): _deal_move(
        "Fund an escrowed deal", "The seller accepts the deal: `amount` of `asset` moves "
        "from the seller's available balance into the ledger's escrow account (FUNDED), "
        "or -24004 and nothing is locked.", codes=(-24004,)),
    ("POST", "/sapi/v1/escrow/deal/paid"): _deal_move(
        "Mark an escrowed deal paid", "The buyer says the price was paid (PAID); the "
        "deal no longer expires."),
    ("POST", "/sapi/v1/escrow/deal/release"): _deal_move(
        "Release an escrowed deal", "The seller releases the escrowed asset to the buyer "
        "(RELEASED): only the seller, from FUNDED or PAID, never while disputed."),
    ("POST", "/sapi/v1/escrow/deal/cancel"): _deal_move(
        "Cancel an escrowed deal", "Either side before funding; once funded only the "
        "buyer, and the asset goes back to the seller (CANCELLED)."),
    ("POST", "/sapi/v1/escrow/deal/dispute"): _deal_move(
        "Dispute an escrowed deal", "Either side disputes a PAID deal (DISPUTED): the "
        "asset stays in escrow until an admin resolves it (release or refund).",
        Param("reason", {"type": "string", "maxLength": 256}, "Why (recorded).")),
    ("GET", "/sapi/v1/escrow/deal"): Op(
        "An escrowed deal", "One of your deals (as seller or buyer) with its history "
        "(each transition: action, who, states, time).", (_DEAL_ID,), SIGNED, "read",
        codes=(-1100, -1102, -24001)),
    ("GET", "/sapi/v1/escrow/deals"): Op(
        "Your escrowed deals", "Your deals as seller or buyer, oldest first.",
        (Param("state", {"type": "string", "enum": ["OPEN", *(st.value for st in DealState)]},
               "One state, or OPEN (not final)."),
         Param("fromId", ID, "From this deal id on."),
         Param("limit", _limit(100, 1000), "How many.")),
        SIGNED, "read", codes=(-1100,)),
})

# --------------------------------------------------------------------------- error model
#: Every code the gateway answers, with what it means here (Binance's codes and texts).
ERROR_CODES: Final[dict[int, str]] = {
    -1000: "Unknown error (HTTP 500), or an administrative change that could not reach a "
           "component (HTTP 503; call again); WebSocket API: a frame that is not JSON.",
    -1001: "Internal error: a wallet (or the database, for account snapshots) did not "
           "answer in time; try again.",
    -1002: "User session: no, an invalid or an expired access token; wrong credentials; "
           "email not verified (HTTP 401); WebSocket API: "
           "`userDataStream.subscribe` before `session.logon`.",
    -1003: "Too much request weight (HTTP 429, with `Retry-After`), banned for repeating "
           "that (HTTP 418), or too many failed logins (HTTP 429).",
    -1007: "Timeout waiting for the backend: the request was accepted but its outcome is "
           "not known yet (HTTP 503); query the order before retrying.",
    -1013: "A filter refused the order (`Filter failure: PRICE_FILTER`, `LOT_SIZE`, "
           "`NOTIONAL`, `ICEBERG_PARTS`, `PERCENT_PRICE_BY_SIDE`...), or the market is "
           "closed (halted pair, kill switch).",
    -1014: "Unsupported order combination.",
    -1015: "Too many new orders (HTTP 429, with `Retry-After`).",
    -1020: "This operation is not supported: no such path (HTTP 404) or method (405), or "
           "WebSocket API method.",
    -1021: "Timestamp outside of the `recvWindow`.",
    -1022: "Signature not valid.",
    -1100: "Illegal characters or a value out of range in a parameter (the message names "
           "the legal range); also refusals of the admin and user APIs (HTTP 400, or 404 "
           "for an unknown account or user).",
    -1101: "Request body too large (HTTP 413); WebSocket API: too many params.",
    -1102: "A mandatory parameter was not sent, was empty or malformed.",
    -1104: "A non-empty JSON body on a Binance endpoint: send a form body or the query.",
    -1106: "A parameter sent when not required (by the order type).",
    -1115: "Invalid timeInForce.",
    -1116: "Invalid orderType.",
    -1117: "Invalid side.",
    -1120: "Invalid interval.",
    -1121: "Invalid symbol.",
    -1125: "This listenKey does not exist.",
    -1127: "More than the allowed time between `startTime` and `endTime` (30 days for "
           "Convert and account snapshots), or reversed.",
    -1128: "Combination of optional parameters invalid.",
    -1130: "Data sent for a parameter is not valid.",
    -1131: "recvWindow must be less than 60000.",
    -1135: "WebSocket API: `params` is not a JSON object.",
    -1158: "Order type not supported in OCO.",
    -1165: "A limit order in a buy OCO must be below.",
    -1166: "A limit order in a sell OCO must be above.",
    -1168: "At least one OCO order must be contingent.",
    -1196: "A stop loss order in a buy OCO must be above.",
    -1197: "A stop loss order in a sell OCO must be below.",
    -1198: "A take profit order in a buy OCO must be below.",
    -1199: "A take profit order in a sell OCO must be above.",
    -2010: "New order rejected: insufficient balance, duplicate client order id, would "
           "take (LIMIT_MAKER), would trigger immediately, market closed, OCO prices in "
           "the wrong order, iceberg quantity too large.",
    -2011: "Cancel rejected: unknown or finished order (list).",
    -2013: "Order (list) does not exist.",
    -2014: "API-key format invalid, or no key sent (HTTP 401).",
    -2015: "Invalid API key, IP, or permissions for action (HTTP 401); admin token invalid "
           "(401) or the admin's role may not (403); no such live API key (404).",
    -2021: "Order cancel-replace partially failed (HTTP 409): one half failed; `data` "
           "has both outcomes.",
    -2022: "Order cancel-replace failed (HTTP 400): the cancel failed and the new order "
           "was not placed or failed too; `data` has both outcomes.",
    -2035: "WebSocket API: no such User Data Stream subscription on this connection.",
    -2038: "Order amend refused (not a reduction, no change, order type, market closed).",
    -4001: "Invalid operation (withdrawal id already used; withdrawal in a state that "
           "does not allow it).",
    -4018: "We don't have this asset.",
    -4019: "Current asset is not open for withdrawal.",
    -4021: "Withdrawal amount not a multiple of the asset's unit.",
    -4022: "Withdrawal amount below the network's minimum.",
    -4026: "Insufficient balance.",
    -4029: "The withdrawal record does not exist (HTTP 404).",
    -4033: "Illegal address.",
    -4035: "This address is not on the whitelist.",
    -4047: "Time interval must be within 0-90 days.",
    -4056: "WebSocket API `session.logon` with an HMAC key: only Ed25519 keys log on; "
           "sign each request instead.",
    **CONVERT_CODES,
    **ESCROW_CODES,
}

ERROR_SCHEMA: Final[Schema] = {
    "title": "Error",
    "type": "object",
    "description": "Every refusal, in Binance's format: a negative code and a message. The "
                   "codes are listed in the API description.",
    "required": ["code", "msg"],
    "properties": {
        "code": {"type": "integer", "description": "Binance's error code.", "example": -1121},
        "msg": {"type": "string", "description": "What went wrong.",
                "example": "Invalid symbol."},
    },
}


def _error(description: str, code: int, msg: str, headers: Schema | None = None) -> Schema:
    doc: Schema = {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"},
        "example": {"code": code, "msg": msg}}}}
    if headers:
        doc["headers"] = headers
    return doc


_RETRY_AFTER: Final[Schema] = {"Retry-After": {
    "description": "Seconds until the limit resets or the ban ends.",
    "schema": {"type": "integer"}}}
RESPONSES: Final[dict[str, Schema]] = {
    "BadRequest": _error("Refused: a parameter, a filter or the state of the order or "
                         "account (see the codes).", -1102,
                         "Mandatory parameter 'symbol' was not sent, was empty/null, or "
                         "malformed."),
    "Unauthorized": _error("No, or an invalid, credential: -2014/-2015 (API key), -1002 "
                           "(user session), -2015 (admin token).", -2015,
                           "Invalid API-key, IP, or permissions for action."),
    "Forbidden": _error("The admin's role may not take this action (-2015).", -2015,
                        "Role Auditor may not account.credit."),
    "NotFound": _error("The account, user, key or withdrawal named does not exist.", -1100,
                       "Unknown account 424242."),
    "PayloadTooLarge": _error("Request body over the gateway's limit (-1101).", -1101,
                              "Request body too large; the limit is 65536 bytes."),
    "TooManyRequests": _error("Over a rate limit: -1003 request weight, -1015 orders. "
                              "Back off; repeating it earns an IP ban (418).", -1003,
                              "Too much request weight used; current limit is 6000 request "
                              "weight per 1 MINUTE. Please use WebSocket Streams for live "
                              "updates to avoid polling the API.", _RETRY_AFTER),
    "Banned": _error("IP banned for repeatedly exceeding the request weight (-1003); "
                     "bans double, up to 3 days.", -1003,
                     "Way too many requests; IP banned until 1700000120000. Please use "
                     "WebSocket Streams for live updates to avoid bans.", _RETRY_AFTER),
    "Unavailable": _error("-1007: the request was accepted but its outcome is not known "
                          "yet. Query before retrying.", -1007,
                          "Timeout waiting for response from backend server. Send status "
                          "unknown; execution status unknown."),
    "BackendDown": _error("A dependency (database, bus, cache) did not answer: nothing was "
                          "read; try again.", -1001,
                          "Internal error; unable to process your request. Please try "
                          "again."),
}

# --------------------------------------------------------------------------- security
SECURITY_SCHEMES: Final[dict[str, Schema]] = {
    "ApiKey": {
        "type": "apiKey", "in": "header", "name": "X-MBX-APIKEY",
        "description": "Your API key (USER_STREAM and SIGNED endpoints). Create one with "
                       "`POST /api/v1/user/api-keys` (or an administrator does).",
    },
    "Signature": {
        "type": "apiKey", "in": "query", "name": "signature",
        "description": (
            "SIGNED endpoints: send `timestamp` (ms, now) and optionally `recvWindow` "
            "(ms, default 5000, at most 60000) among the parameters, then sign the query "
            "string concatenated with the form body, exactly as sent, without `signature` "
            "itself: HMAC-SHA256 with your API secret, as hex, for HMAC keys; Ed25519 with "
            "your private key, as base64 (URL-encoded), for Ed25519 keys. Send it as the "
            "`signature` parameter (query or body). Refused: -1102 missing, -1021 "
            "timestamp outside the window, -1022 wrong signature."),
    },
    "UserSession": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "`Authorization: Bearer <accessToken>` from "
                       "`POST /api/v1/auth/login` (15 minutes; renew with `/auth/refresh`).",
    },
    "AdminToken": {
        "type": "http", "scheme": "bearer",
        "description": "`Authorization: Bearer <admin token>`: from `tradeplane "
                       "admin-create` or `POST /admin/admins`; each admin has a role.",
    },
}

#: Our own operations signed like Binance's USER_DATA (an API key and its signature).
OWN_SIGNED: Final[dict[tuple[str, str], Op]] = {
    ("GET", "/api/v1/portfolio"): Op(
        "Portfolio value and P&L over time", "Your account's value in the quote asset "
        "(USDT) at each snapshot and the P&L from the first one in the window: the change "
        "in value minus net deposits and withdrawals. `period` `interval` (the default: "
        "the platform's snapshot interval) or `day`.",
        (Param("period", {"type": "string", "enum": ["interval", "day"]},
               "Which snapshots.", False, "interval"),
         *_times("; at most 366 days apart, the last 366 days by default"),
         Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
               "At most this many points (the newest).")),
        SIGNED, "read", codes=(-1100, -1127, -1128),
        example={"quote": "USDT", "period": "interval", "intervalMs": 3600000,
                 "value": "9995.00000000", "pnl": "-5.00000000", "netFlows": "0.00000000",
                 "points": [{"time": 1764896400000, "value": "10000.00000000",
                             "pnl": "0.00000000"},
                            {"time": 1764900000000, "value": "9995.00000000",
                             "pnl": "-5.00000000"}]}),
}

# --------------------------------------------------------------------------- admin and users
#: Each admin operation's action (the permission matrix decides which roles may).
ADMIN_ACTIONS: Final[dict[tuple[str, str], A]] = {
    ("POST", "/admin/users"): A.ACCOUNT_CREATE,
    ("GET", "/admin/users"): A.USER_READ,
    ("GET", "/admin/users/{account}"): A.USER_READ,
    ("POST", "/admin/users/{account}/freeze"): A.USER_FREEZE,
    ("POST", "/admin/users/{account}/unfreeze"): A.USER_UNFREEZE,
    ("POST", "/admin/api-keys"): A.APIKEY_CREATE,
    ("GET", "/admin/api-keys"): A.APIKEY_READ,
    ("DELETE", "/admin/api-keys/{api_key}"): A.APIKEY_REVOKE,
    ("POST", "/admin/credit"): A.ACCOUNT_CREDIT,
    ("PUT", "/admin/pairs/{symbol}/trading"): A.PAIR_TRADING,
    ("PUT", "/admin/pairs/{symbol}/fees"): A.PAIR_FEES,
    ("GET", "/admin/kill-switch"): A.KILL_SWITCH_READ,
    ("POST", "/admin/kill-switch"): A.KILL_SWITCH,
    ("DELETE", "/admin/kill-switch"): A.KILL_SWITCH,
    ("POST", "/admin/admins"): A.ADMIN_CREATE,
    ("GET", "/admin/audit"): A.AUDIT_READ,
    ("GET", "/admin/health"): A.HEALTH_READ,
    ("GET", "/admin/withdrawals"): A.WITHDRAWAL_READ,
    ("POST", "/admin/withdrawals/{wid}/approve"): A.WITHDRAWAL_APPROVE,
    ("POST", "/admin/withdrawals/{wid}/reject"): A.WITHDRAWAL_APPROVE,
    ("POST", "/admin/withdraw-whitelist"): A.WITHDRAWAL_WHITELIST,
    ("DELETE", "/admin/withdraw-whitelist"): A.WITHDRAWAL_WHITELIST,
    ("GET", "/admin/escrow/deals"): A.ESCROW_READ,
    ("GET", "/admin/escrow/deals/{deal_id}"): A.ESCROW_READ,
    ("POST", "/admin/escrow/deals/{deal_id}/resolve"): A.ESCROW_RESOLVE,
}

#: Summaries of our own (non-Binance) operations; FastAPI's are the function names.
SUMMARIES: Final[dict[tuple[str, str], str]] = {
    ("POST", "/admin/users"): "Create a user account",
    ("GET", "/admin/users"): "Find a user by email",
    ("GET", "/admin/users/{account}"): "A user account",
    ("POST", "/admin/users/{account}/freeze"): "Freeze an account",
    ("POST", "/admin/users/{account}/unfreeze"): "Unfreeze an account",
    ("POST", "/admin/api-keys"): "Create an API key for an account",
    ("GET", "/admin/api-keys"): "An account's API keys",
    ("DELETE", "/admin/api-keys/{api_key}"): "Revoke an API key",
    ("POST", "/admin/credit"): "Credit funds",
    ("PUT", "/admin/pairs/{symbol}/trading"): "Halt, resume or set a pair cancel-only",
    ("PUT", "/admin/pairs/{symbol}/fees"): "Set a pair's fees",
    ("GET", "/admin/kill-switch"): "Kill switch state",
    ("POST", "/admin/kill-switch"): "Throw the kill switch (halt everything)",
    ("DELETE", "/admin/kill-switch"): "Lift the kill switch",
    ("POST", "/admin/admins"): "Create an admin identity",
    ("GET", "/admin/audit"): "Audit log",
    ("GET", "/admin/health"): "System health: sequences, lags, ledger verdict, streams",
    ("GET", "/admin/withdrawals"): "Withdrawals",
    ("POST", "/admin/withdrawals/{wid}/approve"): "Approve a withdrawal",
    ("POST", "/admin/withdrawals/{wid}/reject"): "Reject a withdrawal",
    ("POST", "/admin/withdraw-whitelist"): "Whitelist a withdrawal address",
    ("DELETE", "/admin/withdraw-whitelist"): "Remove a whitelisted address",
    ("GET", "/admin/escrow/deals"): "Escrowed deals",
    ("GET", "/admin/escrow/deals/{deal_id}"): "An escrowed deal and its history",
    ("POST", "/admin/escrow/deals/{deal_id}/resolve"): "Resolve a disputed deal",
    ("POST", "/api/v1/auth/signup"): "Sign up",
    ("POST", "/api/v1/auth/verify-email"): "Verify the email address",
    ("POST", "/api/v1/auth/resend-verification"): "Mail a new verification token",
    ("POST", "/api/v1/auth/login"): "Log in",
    ("POST", "/api/v1/auth/refresh"): "Renew the tokens",
    ("POST", "/api/v1/auth/logout"): "Log out (this session)",
    ("POST", "/api/v1/auth/logout-all"): "Log out everywhere",
    ("GET", "/api/v1/user/me"): "The user",
    ("GET", "/api/v1/user/login-history"): "Login history",
    ("POST", "/api/v1/user/2fa/setup"): "Start setting up 2FA (TOTP)",
    ("POST", "/api/v1/user/2fa/enable"): "Enable 2FA",
    ("POST", "/api/v1/user/2fa/disable"): "Disable 2FA",
    ("GET", "/api/v1/user/api-keys"): "The user's API keys",
    ("POST", "/api/v1/user/api-keys"): "Create an API key",
    ("DELETE", "/api/v1/user/api-keys/{api_key}"): "Revoke an API key",
}

#: Descriptions replacing a route's docstring where that speaks of the platform's insides.
DESCRIPTIONS: Final[dict[tuple[str, str], str]] = {
    ("PUT", "/admin/pairs/{symbol}/fees"):
        "New maker and taker fees, in parts per million of the traded amount. Trades "
        "settled from then on pay them.",
    ("POST", "/admin/kill-switch"):
        "Halt every pair at once: trading requests are refused (-1013) from now on and "
        "every matching engine halts its market. Each pair's own state is kept, to be "
        "restored when the switch is lifted. Calling it again re-sends the halts.",
    ("DELETE", "/admin/kill-switch"):
        "Resume: every pair back to the state it had when the switch was thrown (or was "
        "given since).",
}

#: Descriptions of the admin and user request bodies' fields: schema -> field -> text.
BODY_FIELDS: Final[dict[str, dict[str, str]]] = {
    "NewUser": {"name": "The user's name (letters, digits, `_ . @ -`)."},
    "FreezeReq": {"reason": "Why (recorded in the audit log)."},
    "CreditReq": {"account": "The account to credit.", "asset": "The asset, e.g. `USDT`.",
                  "amount": "A positive decimal amount.",
                  "ref": "Your reference; a credit with a known `ref` is not repeated."},
    "TradingReq": {"trading": "`enabled`, `halted` or `cancel-only`."},
    "FeesReq": {"makerFeePpm": "Maker fee, parts per million of the traded amount.",
                "takerFeePpm": "Taker fee, parts per million of the traded amount."},
    "KillReq": {"reason": "Why (recorded in the audit log)."},
    "NewAdmin": {"name": "The admin's name (letters, digits, `_ . @ -`).",
                 "role": "SuperAdmin, Operator, Support or Auditor."},
    "NewKey": {"account": "The account the key trades for.",
               "permissions": "Some of `read`, `trade`, `withdraw`, `convert`, "
                              "`escrow`.",
               "keyType": "`HMAC_SHA256` (a secret is made and answered once) or `ED25519` "
                          "(send your `publicKey`).",
               "label": "A name for the key."},
    "UserKeyReq": {"permissions": "Some of `read`, `trade`, `withdraw`, `convert`, "
                                  "`escrow`.",
                   "keyType": "`HMAC_SHA256` (a secret is made and answered once) or "
                              "`ED25519` (send your `publicKey`).",
                   "label": "A name for the key.",
                   "totpCode": "Your 2FA code, once 2FA is enabled."},
    "SignupReq": {"email": "Your email address (a verification token is mailed to it).",
                  "password": "At least 10 characters."},
    "EmailReq": {"email": "The account's email address."},
    "TokenReq": {"token": "The token from the verification mail."},
    "LoginReq": {"email": "Your email address.", "password": "Your password."},
    "RefreshReq": {"refreshToken": "The refresh token from login or the last refresh."},
    "CodeReq": {"code": "A current TOTP code (or, to disable, a recovery code)."},
    "Rejection": {"reason": "Why (shown to the user in the withdrawal's `info`)."},
    "Resolution": {"outcome": "`release` (to the buyer) or `refund` (to the seller).",
                   "reason": "Why (recorded in the audit log and the deal's history).",
                   "requestId": "Your id for the request: the same again does nothing "
                                "again."},
    "WhitelistEntry": {"account": "The user's account.", "asset": "The coin, e.g. `LTC`.",
                       "address": "The address."},
}

DESCRIPTION: Final = """\
The REST API of tradeplane. `/api/v3` and `/sapi/v1` follow Binance's spot API: the same
paths, parameters, answers, signatures, limits and error codes, so Binance clients (ccxt,
binance-connector) work unchanged. `/api/v1` (users) and `/admin` are tradeplane's own
JSON APIs.

**Parameters.** Binance endpoints take their parameters in the query string, a form body
(`application/x-www-form-urlencoded`) or both (the query wins); not JSON. Decimals are
strings (`"0.01"`), times are milliseconds since the Unix epoch.

**Security.** NONE: public. USER_STREAM: the `X-MBX-APIKEY` header. SIGNED: the key
header plus `timestamp`, optional `recvWindow` and `signature` (see the `Signature`
scheme: HMAC-SHA256 hex or Ed25519 base64 of the query string plus the body). A key has
permissions (`read`, `trade`, `withdraw`, `convert`, `escrow`), may be limited to
addresses and may expire. User endpoints take `Authorization: Bearer <accessToken>`, admin endpoints
`Authorization: Bearer <admin token>`.

**Rate limits.** Each request weighs what Binance charges (given per operation); 6000 per
minute per address and per key by default, and 100 new orders per 10 s and 200,000 per day
per key. Every answer reports `X-MBX-USED-WEIGHT-1M`, order answers
`X-MBX-ORDER-COUNT-10S` and `-1D`. Over a limit: HTTP 429 with `Retry-After`; repeating
that: HTTP 418, an IP ban.

**WebSocket** (not described here): market streams at `/ws/<streams>`, `/ws` and
`/stream?streams=...` (`<symbol>@depth`, `@depth@100ms`, `@trade`, `@aggTrade`,
`@kline_<interval>`, `@ticker`, `@bookTicker`; `SUBSCRIBE`/`UNSUBSCRIBE`), the user data
stream at `/ws/<listenKey>`, as Binance's; ours, one convert order's routing states
(`convertOrderUpdate`, closed at CONFIRMED or FAILED) at
`/ws/convert/<orderId>?listenKey=<key>`. The WebSocket API at `/ws-api/v3` is Binance's
too: requests `{"id", "method", "params"}` answered `{"id", "status", "result" | "error",
"rateLimits"}`; each method is the REST operation of the same name (`order.place` is
`POST /api/v3/order`...), with its weight, limits, signature (params sorted by name) and
codes; `session.logon` (Ed25519 keys) signs for the connection, and
`userDataStream.subscribe` brings the account's events on the same socket.

**Errors.** HTTP 4xx (5xx when the platform failed) with `{"code": <negative int>, "msg":
"..."}`, for every refusal and every unknown path or method. The codes:

"""


def _error_table() -> str:
    rows = "\n".join(f"| {code} | {text} |" for code, text in sorted(ERROR_CODES.items(),
                                                                       reverse=True))
    return f"| code | meaning |\n| --- | --- |\n{rows}\n"


TAGS: Final[list[Schema]] = [
    {"name": "general", "description": "Connectivity, server time, exchange information."},
    {"name": "market data", "description": "Public market data: book, trades, candles, "
                                           "tickers."},
    {"name": "trading", "description": "Orders, OCO lists and the account (SIGNED)."},
    {"name": "user data stream", "description": "Listen keys for `/ws/<listenKey>`."},
    {"name": "wallet", "description": "Binance's `/sapi/v1` wallet and status endpoints: "
                                      "coins, deposits, withdrawals, fees."},
    {"name": "convert", "description": "Binance's Convert API (`/sapi/v1/convert`): swap "
                                       "any asset for another at the best route through "
                                       "our books, against the house convert desk; and "
                                       "our indicative rates."},
    {"name": "escrow", "description": "Escrowed deals (ours, `/sapi/v1/escrow`): a buyer "
                                      "asks a seller for an asset paid off the platform; "
                                      "the seller's asset waits in the ledger's escrow "
                                      "account until released, refunded or resolved."},
    {"name": "users", "description": "Sign-up, login sessions, 2FA and the user's API keys "
                                     "(tradeplane's own API)."},
    {"name": "admin", "description": "Administration (tradeplane's own API): each endpoint "
                                     "is allowed to the roles of one action."},
]

# --------------------------------------------------------------------------- description text
_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc):`~?(?:[\w.]+\.)?([\w]+)`")
_RAISES = re.compile(r"\n\s*Raises:\n(?:\s+.*\n?)*", re.MULTILINE)


def client_text(doc: str | None) -> str:
    """A docstring as a client reads it: Markdown code spans, no Python cross-references,
    no ``Raises:`` section (the error codes are documented per response)."""
    if not doc:
        return ""
    text = _RAISES.sub("\n", doc + "\n")
    text = _ROLE.sub(r"`\1`", text)
    text = text.replace("``", "`")
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def _roles(action: A) -> str:
    allowed = [r.value for r in Role if r in PERMISSION_MATRIX[action]]
    return ", ".join(allowed)


def _weight(method: str, path: str, op: Op) -> str:
    return op.weight or str(route_cost(method, path, "")[0])


#: The refusal shown as an operation's example: the first of these it can answer.
_EXAMPLES: Final[dict[int, str]] = {
    -1121: "Invalid symbol.",
    -1125: "This listenKey does not exist.",
    -2013: "Order does not exist.",
    -4018: "We don't have this asset.",
    -4047: "Time interval must be within 0-90 days",
    -1100: "Illegal characters found in parameter 'limit'; legal range is '1-1000'.",
}


def _binance_operation(method: str, path: str, spec: Op, doc: Schema) -> None:
    params = list(spec.params)
    if spec.security == SIGNED:
        params += [
            Param("recvWindow", {"type": "integer", "minimum": 1, "maximum": 60000,
                                 "default": 5000},
                  "How long after `timestamp` the request is valid (ms)."),
            Param("timestamp", TIME_MS, "When the request was made (ms since the epoch).",
                  True, 1_700_000_000_000),
        ]
    doc["summary"] = spec.summary
    security = spec.security + (f" (key permission `{spec.permission}`)"
                                if spec.permission else "")
    doc["description"] = (f"{spec.description}\n\nSecurity: {security}. "
                          f"Weight: {_weight(method, path, spec)}.").strip()
    doc["parameters"] = [p.openapi() for p in params]
    doc["security"] = ({"SIGNED": [{"ApiKey": [], "Signature": []}],
                        "USER_STREAM": [{"ApiKey": []}]}.get(spec.security, []))
    responses = doc.setdefault("responses", {})
    responses.pop("422", None)
    if spec.example is not None:
        ok = responses.setdefault("200", {"description": "Successful Response"})
        ok.setdefault("content", {}).setdefault("application/json", {})["example"] = (
            spec.example)
    codes = ", ".join(str(c) for c in sorted(spec.codes, reverse=True))
    refused = copy.deepcopy(RESPONSES["BadRequest"])
    refused["description"] = ("Refused" + (f"; codes {codes}" if codes else "") +
                              " (see the table of codes).")
    for code, msg in _EXAMPLES.items():
        if code in spec.codes:
            refused["content"]["application/json"]["example"] = {"code": code, "msg": msg}
            break
    responses["400"] = refused
    if spec.security != NONE:
        responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
    if method != "GET":
        responses["413"] = {"$ref": "#/components/responses/PayloadTooLarge"}
    responses["418"] = {"$ref": "#/components/responses/Banned"}
    responses["429"] = {"$ref": "#/components/responses/TooManyRequests"}
    # A dependency outage: a read may simply be retried; a change's outcome is unknown.
    responses["503"] = {"$ref": "#/components/responses/"
                        + ("BackendDown" if method == "GET" else "Unavailable")}


def _own_operation(method: str, path: str, doc: Schema) -> None:
    """An admin or user operation: FastAPI documented its body and parameters already."""
    if (method, path) in SUMMARIES:
        doc["summary"] = SUMMARIES[(method, path)]
    text = DESCRIPTIONS.get((method, path)) or client_text(doc.get("description"))
    responses = doc.setdefault("responses", {})
    responses.pop("422", None)
    responses["400"] = {"$ref": "#/components/responses/BadRequest"}
    if path.startswith("/admin"):
        action = ADMIN_ACTIONS[(method, path)]
        text = (f"{text}\n\n" if text else "") + (
            f"Action `{action.value}`: roles {_roles(action)}.")
        doc["security"] = [{"AdminToken": []}]
        responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
        responses["403"] = {"$ref": "#/components/responses/Forbidden"}
        if "{" in path or method == "GET":
            responses["404"] = {"$ref": "#/components/responses/NotFound"}
    elif path.startswith(("/api/v1/user/", "/api/v1/auth/logout")):
        doc["security"] = [{"UserSession": []}]
        responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
    else:
        doc["security"] = []
        if path in ("/api/v1/auth/login", "/api/v1/auth/refresh"):
            responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
    if path == "/api/v1/auth/login":
        responses["429"] = {"$ref": "#/components/responses/TooManyRequests"}
    if text:
        doc["description"] = text
    else:
        doc.pop("description", None)


def describe(generated: Schema) -> Schema:
    """The complete API description from FastAPI's generated one (which is not changed).

    Raises:
        KeyError: a Binance route without an entry in :data:`BINANCE`, or an admin route
            without its action (a new route must be documented here).
    """
    doc = copy.deepcopy(generated)
    doc["info"]["description"] = DESCRIPTION + _error_table()
    doc["tags"] = TAGS
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            key = (method.upper(), path)
            if path.startswith(("/api/v3/", "/sapi/", "/fapi/", "/dapi/")):
                _binance_operation(key[0], path, BINANCE[key], op)
            elif key in OWN_SIGNED:
                _binance_operation(key[0], path, OWN_SIGNED[key], op)
            else:
                _own_operation(key[0], path, op)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Error"] = ERROR_SCHEMA
    for name, fields in BODY_FIELDS.items():
        props = schemas.get(name, {}).get("properties", {})
        for fname, text in fields.items():
            if fname in props:
                props[fname].setdefault("description", text)
    components["responses"] = RESPONSES
    components["securitySchemes"] = SECURITY_SCHEMES
    return doc


# --------------------------------------------------------------------------- wiring
def docs_page() -> str:
    return (STATIC_DIR / "docs.html").read_text(encoding="utf-8")


def install(app: FastAPI) -> None:
    """Serve the description (completed, built once) and ``/docs`` from the vendored assets
    under ``/static`` (``/`` is the trading UI's: ``ui.py``). The app must be created with
    ``docs_url=None, redoc_url=None``."""
    generate = app.openapi

    def openapi() -> Schema:
        if app.openapi_schema is None:
            app.openapi_schema = describe(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    page = docs_page()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount(STATIC_PATH, StaticFiles(directory=str(STATIC_DIR)), name="static")
