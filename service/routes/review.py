"""Review of published staff answers (staff): the flagged ones, and re-approving or retiring each.

A flagged answer (a source it relied on changed) is served only with an escalation until
staff decide here; see ``context_store.learn.approval``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from pydantic import BaseModel, Field

from context_store.learn import answers_for_review, approve_answer, retire_answer
from service.answers import index_later
from service.deps import StoreDep, require_staff

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["staff"], dependencies=[Depends(require_staff)])


class ApproveIn(BaseModel):
    author: str = Field(min_length=1, max_length=200, description="Who re-approved it.")
    answer: str | None = Field(default=None, min_length=1, description="A corrected answer text; omitted: the answer stands as it is.")


class RetireIn(BaseModel):
    author: str = Field(min_length=1, max_length=200, description="Who retired it.")
    note: str | None = Field(default=None, max_length=2000)


@router.get("/answers/review", summary="Answers flagged for review (a source they relied on changed)")
def review_list(store: StoreDep) -> dict[str, Any]:
    return {"answers": answers_for_review(store)}


@router.post("/answers/{answer_id}/approve", summary="Re-approve a flagged answer (clears the flag)")
def approve(answer_id: str, body: ApproveIn, store: StoreDep, request: Request, background: BackgroundTasks) -> dict[str, Any]:
    view, path = approve_answer(store, answer_id, reviewer=body.author, text=body.answer)
    return {**view, "indexing": index_later(request, background, answer_id, path)}


@router.post("/answers/{answer_id}/retire", summary="Retire an answer (its document is tombstoned)")
def retire(answer_id: str, body: RetireIn, store: StoreDep, request: Request, background: BackgroundTasks) -> dict[str, Any]:
    view, path = retire_answer(store, answer_id, reviewer=body.author, note=body.note)
    return {**view, "indexing": index_later(request, background, answer_id, path)}
