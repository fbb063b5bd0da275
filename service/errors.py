"""One error shape for every 4xx/5xx: ``{"error": {"code", "message", "details"?}}``, and one table.

``ERROR_TABLE`` maps each error of the core's tree (``context_store.errors``) to its HTTP
status and code; every route, JSON or HTML, goes through it, so the same failure reads the
same wherever it happens. ``ApiError`` is for what only the HTTP edge knows (a missing key,
a body too large, a webhook body of the wrong shape). Anything else a route raises is a 500
in the same shape, with an id to find it in the server log and no internals in the body.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from context_store.errors import (
    ConfigError,
    FreshContextError,
    InvalidRequest,
    NotFound,
    OutcomeRejected,
    QuestionConflict,
    StoreError,
    TooLarge,
    UnknownConversation,
    UnknownQuestion,
    UnknownTrace,
    UnknownUser,
    WebhookRejected,
)

__all__ = ["ERROR_TABLE", "HTTP_CODES", "ApiError", "error_body", "error_response", "install_error_handlers", "status_and_code"]

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.details = status, code, message, headers, details


# Most specific first: the first class an error is an instance of decides.
ERROR_TABLE: list[tuple[type[FreshContextError], Callable[[Any], tuple[int, str]]]] = [
    (UnknownUser, lambda e: (404, "unknown_user")),
    (UnknownQuestion, lambda e: (404, "unknown_question")),
    (UnknownTrace, lambda e: (404, "unknown_trace")),
    (UnknownConversation, lambda e: (404, "unknown_conversation")),
    (NotFound, lambda e: (404, "not_found")),
    (QuestionConflict, lambda e: (409, e.code)),
    (WebhookRejected, lambda e: (e.status, e.reason)),
    (OutcomeRejected, lambda e: (e.status, e.code)),
    (TooLarge, lambda e: (413, e.code)),
    (InvalidRequest, lambda e: (400, "invalid_request")),
    (ConfigError, lambda e: (503, "not_configured")),
    (StoreError, lambda e: (500, "store_error")),
]


# Errors Starlette/FastAPI raise themselves (no route, wrong method, a body it could not parse).
HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              413: "body_too_large", 429: "too_many_requests"}


def status_and_code(exc: FreshContextError) -> tuple[int, str]:
    for cls, mapping in ERROR_TABLE:
        if isinstance(exc, cls):
            return mapping(exc)
    return 500, "error"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(exc: FreshContextError | ApiError) -> JSONResponse:
    """The JSON response for an error, through the one table."""
    if isinstance(exc, ApiError):
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers)
    status, code = status_and_code(exc)
    message = exc.detail if isinstance(exc, (WebhookRejected, OutcomeRejected)) else str(exc)
    return JSONResponse(error_body(code, message), status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(FreshContextError)
    async def _core(_: Request, exc: FreshContextError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            e = next(e for e in errors if e.get("type") == "json_invalid")
            return JSONResponse(error_body("malformed_json", f"request body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}"), status_code=400)
        details = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")} for e in errors]
        message = "; ".join(f"{d['field'] or 'body'}: {d['message']}" for d in details)
        return JSONResponse(error_body("invalid_request", message, details), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal_error", f"the server failed on this request; its log has the details under error id {error_id}"),
                            status_code=500)
