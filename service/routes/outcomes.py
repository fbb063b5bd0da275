"""``POST /v1/outcomes``: what happened after a response, reported by the agent platform.

Thin: the body becomes an ``OutcomeReport`` and ``route.record_outcome`` validates, stores
and (for a failed bot answer) opens a review. Every refusal is a specific code from the one
error table (``invalid_outcome``, ``invalid_csat``, ``unknown_trace``, ``outcome_in_future``,
``too_many_outcomes``, ...). A repeat of an ``event_id`` answers 200 with the first result
and ``duplicate: true``; a new outcome answers 201.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from context_store.route import OutcomeReport, record_outcome
from service.deps import Agent, StoreDep
from service.schemas import OutcomeIn, OutcomePublic

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["outcomes"])


@router.post("/outcomes", response_model=OutcomePublic, status_code=201, summary="Report what happened after a response",
             responses={200: {"model": OutcomePublic, "description": "A repeat of an event_id: the first result, nothing stored"}})
def post_outcome(body: OutcomeIn, request: Request, store: StoreDep, who: Agent) -> Any:
    """The key of ``/v1/retrieve`` (role ``agent``); an agent reports on its own responses, an admin on any."""
    report = OutcomeReport(
        event_id=body.event_id, outcome=body.outcome, trace_id=body.trace_id, conversation_id=body.conversation_id,
        csat=body.csat, thumbs=body.thumbs, note=body.note, at=body.at, client=who.name,
    )
    recorded = record_outcome(store, report, own_traces_only=who.role == "agent")
    if recorded.duplicate:
        return JSONResponse(OutcomePublic(**recorded.as_dict()).model_dump(mode="json"), status_code=200)
    request.app.state.metrics.record_outcome(recorded)
    return recorded.as_dict()
