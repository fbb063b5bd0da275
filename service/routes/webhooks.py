"""``POST /v1/webhooks/staff-answer``: a staff answer from a helpdesk, signed per Standard Webhooks."""

from __future__ import annotations

import hashlib
import json

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import Field, ValidationError

from context_store.route import processed_delivery, verify
from service.answers import WAIT_DEFAULT_S, WAIT_MAX_S, WEBHOOK_PATH, AnswerIn, accept_answer, await_retrievable, routing
from service.deps import store as serving_store
from service.errors import ApiError

__all__ = ["router"]

router = APIRouter(tags=["staff"])


class StaffAnswerIn(AnswerIn):
    question_id: str = Field(min_length=1, max_length=64)


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it exceeds ``limit`` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for piece in request.stream():
        body.extend(piece)
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
    return bytes(body)


def _parse(raw: bytes) -> StaffAnswerIn:
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_body", "body must be a JSON object with question_id, answer and author")
    try:
        return StaffAnswerIn.model_validate({**payload, "answer": payload.get("answer", payload.get("text"))})
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) + f" ({e['msg']})" for e in exc.errors())
        raise ApiError(422, "invalid_body", f"invalid fields: {fields}") from exc


@router.post(
    WEBHOOK_PATH, status_code=200,
    summary="Receive a staff answer (Standard Webhooks signature)",
    responses={202: {"description": "?wait=true: stored, but not retrievable within the wait (indexing goes on)"},
               400: {"description": "missing headers, bad timestamp or invalid JSON"}, 401: {"description": "bad signature or stale timestamp"},
               404: {"description": "unknown question"}, 409: {"description": "replayed webhook-id or already answered"},
               413: {"description": "body too large"}, 422: {"description": "body fields invalid"},
               503: {"description": "no webhook secret or staff source configured"}},
)
async def staff_answer_webhook(
    request: Request,
    background: BackgroundTasks,
    wait: bool = Query(False, description="Return only once this API can retrieve the answer (bounded by timeout)."),
    timeout: float = Query(WAIT_DEFAULT_S, gt=0, le=WAIT_MAX_S, description="Seconds ?wait=true waits at most."),
) -> Response:
    """Body: ``{"question_id", "answer", "author"}`` and what to publish: ``question`` (the question as staff
    wrote or confirmed it; default: the customer's, redacted), ``paraphrases`` and ``scope`` (``global`` or
    ``user``); signed with one of ``routing.webhook_secrets``.

    200 once the answer is stored; ``retrievable`` says whether a retrieval returns it yet.
    With ``?wait=true`` the answer is indexed before the response: 200 with ``retrievable:
    true`` once this API's search can return it, 202 when ``timeout`` ran out first (stored;
    indexing goes on). A replay of a processed ``webhook-id`` gets 409 ``duplicate_delivery``
    with the original result; senders should treat it as delivered.
    """
    config = routing(request)
    raw = await _read_body(request, config.max_webhook_body_bytes)
    webhook_id, _ = verify(config.webhook_secrets, request.headers, raw, tolerance=config.webhook_tolerance_seconds)
    seen = processed_delivery(serving_store(request), webhook_id)
    if seen is not None:
        raise ApiError(409, "duplicate_delivery", f"webhook-id {webhook_id} was processed at {seen.received_at.isoformat()}; treat it as delivered",
                       details={"original": seen.response})
    data = _parse(raw)
    result = accept_answer(
        request, None if wait else background, data.question_id, data, "webhook", webhook_id, hashlib.sha256(raw).hexdigest()
    )
    status = 200
    if wait:
        status, result = await run_in_threadpool(await_retrievable, request, result, timeout)
    return JSONResponse(result, status_code=status)
