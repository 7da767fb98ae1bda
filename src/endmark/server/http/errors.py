"""One mapping from exceptions to HTTP errors, each in the shape of the dialect its path speaks."""

from __future__ import annotations

import json
import logging
import math
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from endmark.invalid import ContextExceeded, InvalidRequest
from endmark.scheduler import QueueFull
from endmark.server.http.dialect import Problem, dialect_for

log = logging.getLogger("endmark.server")

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}


def error_body(
    path: str,
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    kind: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The error in the shape of the dialect `path` speaks (llama.cpp's by default)."""
    return dialect_for(path).error_body(Problem(status, message, param, code, kind, details))


def error_response(
    request: Request,
    status: int,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = error_body(request.url.path, status, message, param, **extra)
    return JSONResponse(body, status_code=status, headers=headers)


def describe_validation(errors: list) -> tuple[str, str | None]:  # type: ignore[type-arg]
    """Pydantic's errors as one readable line, and the first field they name."""
    parts, first = [], None
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        first = first or (loc.split(".")[0] if loc else None)
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request", first


# The integers a body may hold: what 64 bits carry, signed or not. orjson writes no more,
# and no knob means anything beyond (a seed is 64 bits at most).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


class NumberOutOfRange(ValueError):
    pass


def _json_int(text: str) -> int:
    if len(text) > 21 or not INT_MIN <= (value := int(text)) <= INT_MAX:
        raise NumberOutOfRange(f"the number {text[:30]} is beyond 64 bits")
    return value


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NumberOutOfRange(f"the number {text[:30]} is beyond a double's range")
    return value


def _json_constant(name: str) -> Any:
    raise NumberOutOfRange(f"{name} is not a JSON number")


def loads_strict(text: str) -> Any:
    """JSON as the standard has it: no NaN or Infinity, and no number a double or 64 bits
    cannot hold (Python's reader takes all of them, and they reach the knobs unchecked)."""
    return json.loads(
        text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
    )


async def parse_body(request: Request, model: type[M]) -> M:
    """Read a JSON body strictly: invalid UTF-8, bad JSON, numbers out of range and wrong
    types are all 400s."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the request body is not valid UTF-8 ({exc.reason})") from None
    try:
        data = loads_strict(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"malformed JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        ) from None
    except NumberOutOfRange as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    except RecursionError:  # Python's decoder nests no deeper than ~1,000 levels
        raise ApiError(400, "the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        text.encode("utf-8")
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "the request holds invalid UTF-8 (a lone surrogate escape)") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation(exc.errors())
        raise ApiError(400, message, param) from None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.message, exc.param, exc.headers)

    @app.exception_handler(InvalidRequest)
    async def _invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
        if isinstance(exc, ContextExceeded):
            extra = {"code": exc.code, "kind": exc.kind, "details": exc.details()}
            return error_response(request, 400, str(exc), exc.param, **extra)
        return error_response(request, 400, str(exc), exc.param)

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull) -> JSONResponse:
        return error_response(request, 503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(list(exc.errors()))
        return error_response(request, 400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = (
                f"no route {request.method} {request.url.path}: the llama.cpp-style API is at "
                "/completion, /tokenize, /props, ...; OpenAI-style clients use the base URL "
                "/v1 (/v1/chat/completions, /v1/completions, /v1/models)"
            )
        return error_response(request, exc.status_code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(request, 500, f"internal error: {type(exc).__name__}")
