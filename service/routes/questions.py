"""Routed questions for staff tools (JSON): list, read, answer, assign, close, dismiss; learning metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from context_store.learn import learning_metrics
from context_store.route import assign_question, get_question, list_questions, outbox_counts, set_status
from service.answers import WAIT_DEFAULT_S, WAIT_MAX_S, AnswerIn, accept_answer, await_retrievable
from service.deps import StoreDep, require_staff

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["staff"], dependencies=[Depends(require_staff)])


class AssignIn(BaseModel):
    owner: str | None = None


class StatusIn(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


@router.get("/questions", summary="List routed questions (oldest first)")
def questions_list(store: StoreDep, status: str | None = "open", limit: int = 100, offset: int = 0) -> dict[str, Any]:
    return {"questions": list_questions(store, status=None if status == "all" else status, limit=limit, offset=offset)}


@router.get("/questions/{question_id}", summary="A routed question with its working memory, asks and answer")
def question_get(question_id: str, store: StoreDep) -> dict[str, Any]:
    return get_question(store, question_id)


@router.post("/questions/{question_id}/answer", summary="Answer a routed question (same stored path as the webhook)")
def question_answer(
    question_id: str, body: AnswerIn, request: Request, background: BackgroundTasks,
    wait: bool = Query(False, description="Return only once this API can retrieve the answer (bounded by timeout)."),
    timeout: float = Query(WAIT_DEFAULT_S, gt=0, le=WAIT_MAX_S),
) -> Any:
    result = accept_answer(request, None if wait else background, question_id, body, "api")
    if not wait:
        return result
    status, result = await_retrievable(request, result, timeout)  # a sync route: FastAPI runs it in a worker thread
    return JSONResponse(result, status_code=status)


@router.post("/questions/{question_id}/assign", summary="Set or clear the owner of an open question")
def question_assign(question_id: str, body: AssignIn, store: StoreDep) -> dict[str, Any]:
    return assign_question(store, question_id, body.owner)


@router.post("/questions/{question_id}/close", summary="Close an answered question")
def question_close(question_id: str, body: StatusIn, store: StoreDep) -> dict[str, Any]:
    return set_status(store, question_id, "closed", note=body.note)


@router.post("/questions/{question_id}/dismiss", summary="Dismiss an open question without an answer")
def question_dismiss(question_id: str, body: StatusIn, store: StoreDep) -> dict[str, Any]:
    return set_status(store, question_id, "dismissed", note=body.note)


@router.get("/learning", summary="Learning-loop metrics: time to knowledge, reuse, escalation rate, queue ages")
def learning(store: StoreDep) -> dict[str, Any]:
    return {**learning_metrics(store), "outbox": outbox_counts(store)}
