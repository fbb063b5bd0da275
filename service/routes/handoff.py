"""``POST /v1/handoff``: the red button. A person, now, with the whole conversation (``request_handoff``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from context_store.route import request_handoff
from service.deps import StoreDep, require_key
from service.schemas import HandoffRequest, HandoffResponse

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["handoff"], dependencies=[Depends(require_key)])


@router.post(
    "/handoff", response_model=HandoffResponse, status_code=201,
    summary="Hand the conversation to a person at once (no confidence check)",
    responses={200: {"description": "Joined the conversation's open hand-off", "model": HandoffResponse},
               404: {"description": "unknown_user"}, 413: {"description": "transcript_too_large"}},
)
def handoff(body: HandoffRequest, store: StoreDep, response: Response) -> dict[str, Any]:
    """Opens a routed question of kind ``handoff`` whose working memory holds the transcript, the user's
    current state and the context of the conversation's last response; a second press joins it (200)."""
    outcome = request_handoff(
        store, conversation_id=body.conversation_id, reason=body.reason, user_id=body.user_id,
        transcript=[turn.model_dump() for turn in body.transcript],
    )
    if outcome.joined:
        response.status_code = 200
    return outcome.as_dict()
