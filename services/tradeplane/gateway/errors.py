"""Binance-style API errors: HTTP 4xx with ``{"code": -NNNN, "msg": "..."}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from tradeplane.domain.errors import TradeplaneError

log = logging.getLogger("tradeplane.gateway")


class ApiError(TradeplaneError):
    """An error answered to the client in Binance's format."""

    def __init__(self, code: int, msg: str, status: int = 400,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status
        #: What Binance adds to some errors (a cancel-replace's two outcomes), or None.
        self.data = data

    def doc(self) -> dict[str, Any]:
        """The error's JSON: ``{"code", "msg"}``, and ``data`` when it has some."""
        out: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.data is not None:
            out["data"] = self.data
        return out


# The codes and texts clients (ccxt) recognise. The order use cases' refusals carry their
# own (tradeplane.usecases.orders.Refusal); the order routes answer them as ApiError.
def bad_symbol() -> ApiError:
    return ApiError(-1121, "Invalid symbol.")


def mandatory(name: str) -> ApiError:
    return ApiError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def illegal_chars(name: str) -> ApiError:
    return ApiError(
        -1100,
        f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
    )


def shown(value: str, most: int = 64) -> str:
    """``value`` as an error message may quote it: at most ``most`` characters, control
    characters escaped (an answer never echoes unbounded input)."""
    cut = value[:most].encode("unicode_escape").decode("ascii")
    return cut + ("..." if len(value) > most else "")


def bad_param(name: str, value: str) -> ApiError:
    return ApiError(-1100, f"Illegal characters found in parameter '{name}'; "
                           f"value '{shown(value)}'.")


def not_required(name: str) -> ApiError:
    return ApiError(-1106, f"Parameter '{name}' sent when not required.")


def timestamp_outside() -> ApiError:
    return ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")


def bad_signature() -> ApiError:
    return ApiError(-1022, "Signature for this request is not valid.")


def bad_api_key() -> ApiError:
    return ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


#: What a request whose store (PostgreSQL, NATS, Redis) did not answer gets: 503, Binance's
#: -1001 ("DISCONNECTED"), so that a client retries rather than give up as on a 500.
UNAVAILABLE_STATUS = 503
UNAVAILABLE_DOC: dict[str, Any] = {
    "code": -1001, "msg": "Internal error; unable to process your request. Please try again."}


def unavailable(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The answer to a request that met ``exc`` (an ``Unavailable``), logged on one
    line without a traceback: the store's own error says all."""
    log.warning("a store did not answer: %s: %s", type(exc).__name__, exc)
    return UNAVAILABLE_STATUS, UNAVAILABLE_DOC


async def unavailable_handler(_request: Request, exc: Exception) -> JSONResponse:
    status, doc = unavailable(exc)
    return JSONResponse(doc, status_code=status)


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.doc(), status_code=exc.status)
