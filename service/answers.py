"""Every way a staff answer arrives (the signed webhook, the JSON API, the queue page) ends here.

``accept_answer`` stores the answer durably, writes its file into the staff source, then
schedules indexing off the request path (the warm path), so a 2xx is only ever returned
after the answer row has committed, and an embedder outage loses nothing: the next ingest
indexes what is stored. A caller that asks to wait (``?wait=true``) gets ``await_retrievable``
instead of the schedule: the answer is indexed now and the response says whether this
process's retrieval can return it, within a bounded wait.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import BackgroundTasks, Request
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from context_store.errors import FreshContextError, QuestionConflict
from context_store.index import Embedder, WarmApplier, build_embedder
from context_store.learn import answer_applier, store_answer, submit_and_wait, submit_answers, write_answer_file
from context_store.route import RoutingConfig, routing_config
from service.deps import store as serving_store

__all__ = ["WAIT_DEFAULT_S", "WAIT_MAX_S", "WEBHOOK_PATH", "AnswerIn", "accept_answer", "await_retrievable", "index_later", "routing"]

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/v1/webhooks/staff-answer"
WAIT_DEFAULT_S, WAIT_MAX_S = 15.0, 60.0  # ?wait=true: how long a caller is kept, by default and at most


def routing(request: Request) -> RoutingConfig:
    return routing_config(serving_store(request).settings)


def _embedder(request: Request) -> Embedder:
    """The serving process's embedder (the retrieval API's, already loaded); built lazily otherwise."""
    embedder = getattr(request.app.state, "embedder", None)
    if embedder is None:
        embedder = request.app.state.service.embedder
    if embedder is None:
        settings = serving_store(request).settings
        embedder = request.app.state.embedder = build_embedder(settings.embedding, settings.home)
    return embedder


_APPLIER_GUARD = threading.Lock()


def _applier(request: Request) -> WarmApplier:
    """This process's warm path for staff answers: one pass at a time, coalescing a burst of answers."""
    with _APPLIER_GUARD:
        applier = getattr(request.app.state, "answer_applier", None)
        if applier is None:
            applier = request.app.state.answer_applier = answer_applier(serving_store(request), _embedder(request))
    return applier


class AnswerIn(BaseModel):
    """An answer as staff send it, by any channel: the answer, who wrote it, and what to publish for whom."""

    answer: str = Field(min_length=1)
    author: str = Field(min_length=1, max_length=200)
    question: str | None = Field(default=None, max_length=500, description=(
        "The question this answers, as staff wrote or confirmed it; published with the answer. "
        "Omitted: the customer's question, redacted (suggested_question of the routed question)."))
    paraphrases: list[str] = Field(default_factory=list, max_length=20, description="Other wordings staff approve ('Also asked as').")
    scope: Literal["global", "user"] = Field(default="global", description=(
        "global: a company document everyone retrieves. user: a fact of the asker's state, served to that user alone."))


def accept_answer(
    request: Request, background: BackgroundTasks | None, question_id: str, body: AnswerIn, channel: str,
    webhook_id: str | None = None, body_hash: str | None = None,
) -> dict[str, Any]:
    """Store, write and schedule indexing (none without ``background``: the caller awaits it);
    raises the core's errors (one table maps them to HTTP)."""
    store, config = serving_store(request), routing(request)
    try:
        answer = store_answer(
            store, question_id, author=body.author, text=body.answer, question=body.question, paraphrases=body.paraphrases,
            scope=body.scope, channel=channel, webhook_id=webhook_id,
            webhook_endpoint=WEBHOOK_PATH if webhook_id is not None else None, body_sha256=body_hash or "", config=config,
        )
    except IntegrityError as exc:
        # A concurrent delivery of the same id or a second answer won the race: nothing stored twice.
        if webhook_id is not None:
            raise QuestionConflict(f"webhook-id {webhook_id} or question {question_id} was processed concurrently", "duplicate_delivery") from exc
        raise QuestionConflict(f"question {question_id} was answered concurrently", "already_answered") from exc
    response = {"status": "stored", "answer_id": answer.answer_id, "question_id": question_id, "doc_id": answer.doc_id,
                "question": answer.question, "paraphrases": answer.paraphrases, "scope": answer.scope}
    if answer.scope == "global":  # a user-scoped answer has no document: it is a fact of that user's state
        try:
            write_answer_file(store, answer.answer_id, config=config)
        except (OSError, FreshContextError) as exc:
            log.error("answer %s stored; its file could not be written yet: %s", answer.answer_id, exc)
    response["retrievable"] = False  # not yet: ?wait=true returns once it is
    if background is not None or not config.index_answers_inline:
        response["indexing"] = index_later(request, background, answer.answer_id)
    return response


def index_later(request: Request, background: BackgroundTasks | None, answer_id: str, path: Path | None = None) -> str:
    """Index an answer (and ``path``, a file its review rewrote or removed) off the request path, if configured to."""
    if not routing(request).index_answers_inline or background is None:
        return "deferred to the next ingest"
    background.add_task(submit_answers, _applier(request), [answer_id], [path] if path is not None else [])
    return "scheduled"


def await_retrievable(request: Request, response: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any]]:
    """Index a just-stored answer now and wait (up to ``timeout``) until this process's retrieval returns it.

    200 with ``retrievable: true`` and ``retrievable_at`` once the serving dense snapshot and
    text index hold it; 202 with ``retrievable: false`` and a ``detail`` when the wait ran
    out (the answer is stored; indexing goes on). Blocking: call it from a worker thread.
    """
    if not routing(request).index_answers_inline:
        return 200, response  # this process does not index answers: nothing to wait for here
    started = time.monotonic()
    serving = request.app.state.service.serving()
    at = submit_and_wait(_applier(request), [response["answer_id"]], timeout=timeout, refresh=serving.dense.refresh)
    waited = round(time.monotonic() - started, 3)
    if at is None:
        return 202, {
            **response, "retrievable": False, "indexing": "pending", "waited_s": waited,
            "detail": f"stored, but not retrievable within {timeout:g} s; it is being indexed (or the next ingest will): "
                      f"GET /v1/questions/{response['question_id']} shows retrievable_at",
        }
    return 200, {**response, "retrievable": True, "retrievable_at": at.isoformat(), "indexing": "done", "waited_s": waited}
