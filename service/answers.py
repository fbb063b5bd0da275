"""Every way a staff answer arrives (the signed webhook, the JSON API, the queue page) ends here.

``accept_answer`` stores the answer durably, writes its file into the staff source, then
schedules indexing off the request path (the warm path), so a 2xx is only ever returned
after the answer row has committed, and an embedder outage loses nothing: the next ingest
indexes what is stored.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, Request
from sqlalchemy.exc import IntegrityError

from context_store.errors import FreshContextError, QuestionConflict
from context_store.index.embed import Embedder, build_embedder
from context_store.learn import index_answers, store_answer, write_answer_file
from context_store.route import RoutingConfig, routing_config
from context_store.store import ContextStore, StaffAnswer
from service.deps import store as serving_store

__all__ = ["WEBHOOK_PATH", "accept_answer", "routing"]

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/v1/webhooks/staff-answer"


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


class _AnswerIndexer:
    """The warm path of one serving process: at most one indexing pass at a time.

    A burst of answers would otherwise start one LanceDB writer per answer, all committing
    to the same table (and all losing commit races to an ingest running meanwhile). An
    answer arriving during a pass is taken by that pass's next round; nothing waits on a
    request thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._running = False
        self._target: tuple[ContextStore, Embedder] | None = None

    def submit(self, store: ContextStore, embedder: Embedder, answer_id: str) -> None:
        with self._lock:
            self._wanted.add(answer_id)
            self._target = (store, embedder)  # the newest: it follows a promotion
            if self._running:
                return
            self._running = True
        while True:
            with self._lock:
                batch, self._wanted = self._wanted, set()
                if not batch or self._target is None:
                    self._running = False
                    return
                store, embedder = self._target
            self._index(store, embedder, sorted(batch))

    @staticmethod
    def _index(store: ContextStore, embedder: Embedder, answer_ids: list[str]) -> None:
        """Write (if needed) and index; a failure leaves the answers for the next ingest."""
        try:
            paths = []
            for answer_id in answer_ids:
                with store.session() as session:
                    answer = session.get(StaffAnswer, answer_id)
                    path = answer.file_path if answer else None
                paths.append(Path(path) if path else write_answer_file(store, answer_id))
            index_answers(store, embedder, paths)
        except Exception:  # the embedder may be down; the stored answers are indexed by the next ingest
            log.exception("staff answer(s) %s stored but not indexed yet; the next ingest will index them", ", ".join(answer_ids))


_INDEXER_GUARD = threading.Lock()


def _indexer(request: Request) -> _AnswerIndexer:
    with _INDEXER_GUARD:
        indexer = getattr(request.app.state, "answer_indexer", None)
        if indexer is None:
            indexer = request.app.state.answer_indexer = _AnswerIndexer()
    return indexer


def accept_answer(
    request: Request, background: BackgroundTasks, question_id: str, author: str, text: str, channel: str,
    webhook_id: str | None = None, body_hash: str | None = None,
) -> dict[str, Any]:
    """Store, write and schedule indexing; raises the core's errors (one table maps them to HTTP)."""
    store, config = serving_store(request), routing(request)
    try:
        answer = store_answer(
            store, question_id, author=author, text=text, channel=channel, webhook_id=webhook_id,
            webhook_endpoint=WEBHOOK_PATH if webhook_id is not None else None, body_sha256=body_hash or "", config=config,
        )
    except IntegrityError as exc:
        # A concurrent delivery of the same id or a second answer won the race: nothing stored twice.
        if webhook_id is not None:
            raise QuestionConflict(f"webhook-id {webhook_id} or question {question_id} was processed concurrently", "duplicate_delivery") from exc
        raise QuestionConflict(f"question {question_id} was answered concurrently", "already_answered") from exc
    response = {"status": "stored", "answer_id": answer.answer_id, "question_id": question_id, "doc_id": answer.doc_id}
    try:
        write_answer_file(store, answer.answer_id, config=config)
    except (OSError, FreshContextError) as exc:
        log.error("answer %s stored; its file could not be written yet: %s", answer.answer_id, exc)
    if config.index_answers_inline:
        background.add_task(_indexer(request).submit, store, _embedder(request), answer.answer_id)
        response["indexing"] = "scheduled"
    else:
        response["indexing"] = "deferred to the next ingest"
    return response
