"""Binance-style API errors: HTTP 4xx with ``{"code": -NNNN, "msg": "..."}``."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from tradeplane.domain.errors import TradeplaneError
from tradeplane.domain.model import Reason


class ApiError(TradeplaneError):
    """An error answered to the client in Binance's format."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


# The codes and texts clients (ccxt) recognise.
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


def filter_failure(msg: str) -> ApiError:
    return ApiError(-1013, msg)


#: Why the engine refused an order, in Binance's -2010 wording.
_ENGINE_REJECTIONS = {
    Reason.WOULD_TAKE: "Order would immediately match and take.",
    Reason.WOULD_TRIGGER: "Order would trigger immediately.",
    Reason.HALTED: "Market is closed.",
    Reason.BAD_LIST: "The relationship of the prices for the orders is not correct.",
}


def engine_rejection(reason: Reason) -> ApiError:
    """-2010 for an order the engine refused, naming why."""
    return ApiError(-2010, _ENGINE_REJECTIONS.get(reason, "NEW_ORDER_REJECTED"))


def insufficient_balance() -> ApiError:
    return ApiError(-2010, "Account has insufficient balance for requested action.")


def duplicate_order() -> ApiError:
    return ApiError(-2010, "Duplicate order sent.")


def unknown_order_cancel() -> ApiError:
    return ApiError(-2011, "Unknown order sent.")


def no_such_order() -> ApiError:
    return ApiError(-2013, "Order does not exist.")


def timestamp_outside() -> ApiError:
    return ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")


def bad_signature() -> ApiError:
    return ApiError(-1022, "Signature for this request is not valid.")


def bad_api_key() -> ApiError:
    return ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def status_unknown() -> ApiError:
    return ApiError(
        -1007,
        "Timeout waiting for response from backend server. Send status unknown;"
        " execution status unknown.",
        503,
    )


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse({"code": exc.code, "msg": exc.msg}, status_code=exc.status)
