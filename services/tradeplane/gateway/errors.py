"""Binance-style API errors: HTTP 4xx with ``{"code": -NNNN, "msg": "..."}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from tradeplane.domain.errors import TradeplaneError, Unavailable

log = logging.getLogger(__name__)

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


def backend_down() -> ApiError:
    """A dependency (database, bus, cache) did not answer: retry later (Binance's -1001)."""
    return ApiError(-1001, "Internal error; unable to process your request. Please try again.",
                    503)


def status_unknown() -> ApiError:
    """A change whose dependency failed while it was being made: it may or may not have
    happened (Binance's -1007; the client looks before it retries)."""
    return ApiError(-1007, "Timeout waiting for response from backend server. Send status "
                           "unknown; execution status unknown.", 503)


def outage(method: str) -> ApiError:
    """A dependency outage no route answered itself: for a read (GET), -1001 try again;
    for a change, -1007 its status is unknown."""
    return backend_down() if method == "GET" else status_unknown()


def defect() -> ApiError:
    """Anything else that went wrong inside (Binance's -1000)."""
    return ApiError(-1000, "An unknown error occurred while processing the request.", 500)


def bad_signature() -> ApiError:
    return ApiError(-1022, "Signature for this request is not valid.")


def bad_api_key() -> ApiError:
    return ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.doc(), status_code=exc.status)


async def unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """A dependency outage no route answered itself: 503 in Binance's format (see
    :func:`outage`), one warning line (the adapter named what did not answer), never the
    server's plain-text 500."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    err = outage(request.method)
    return JSONResponse(err.doc(), status_code=err.status)


async def defect_handler(_request: Request, _exc: Exception) -> JSONResponse:
    """A defect: 500 in Binance's format (the server still logs its traceback)."""
    err = defect()
    return JSONResponse(err.doc(), status_code=err.status)


def install_handlers(app: Any) -> None:
    """Every error a route can raise, answered in the API's own format: ApiError as
    itself, a dependency outage as 503 (-1001 for a read, -1007 for a change), anything
    else as 500 -1000."""
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(Unavailable, unavailable_handler)
    app.add_exception_handler(Exception, defect_handler)
