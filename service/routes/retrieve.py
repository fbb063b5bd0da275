"""``POST /v1/retrieve``: the agent's question in, cited context with a decision out (``respond()``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from context_store.route import Question, respond
from service.deps import Agent, ServingDep
from service.schemas import RetrieveRequest, RetrieveResponse

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["retrieval"])


@router.post("/retrieve", response_model=RetrieveResponse, summary="Context, confidence and decision for a question")
def retrieve(body: RetrieveRequest, request: Request, serving: ServingDep, who: Agent) -> Response:
    """Current company chunks (cited by document version), the user's current state, a calibrated
    confidence, an ``answer``/``escalate`` decision with typed reasons, and a ``trace_id`` for the evidence trail."""
    question = Question(
        query=body.query, user_id=body.user_id, k=body.k, as_of=body.as_of, filters=body.filters, mode=body.mode,
        conversation_id=body.conversation_id, client=who.name,
        history=[turn.model_dump() for turn in body.history] if body.history is not None else None,
    )
    response = respond(serving.responder, question)
    request.app.state.metrics.record_response(response)
    # Serialised once, here, as pydantic would (datetimes in ISO 8601): returned as a dict,
    # FastAPI validates it against RetrieveResponse and serialises it in a second hop to the
    # thread pool, on every request. RetrieveResponse still documents the body (OpenAPI), and
    # tests/service/test_api.py checks that the body validates against it with no key left over.
    return Response(to_json(response.as_dict()), media_type="application/json")
