"""The learning loop: a staff answer is stored, becomes a company document, and is served next time.

Order matters, because nothing may be lost:

1. ``store_answer`` writes the ``StaffAnswer`` row with what staff approved to publish and
   for whom (``learn.publish``), marks the question answered and queues the askers'
   ``question.answered`` notification, in one transaction. Only then does the webhook return 2xx.
2. ``write_answer_file`` writes a global answer as Markdown (the approved question, the
   answer, the approved paraphrases; front matter: question id, answer id, author, the
   document versions it was given) into the configured company source of kind
   ``staff_answer`` and appends it to the change journal (as the watcher would). A
   user-scoped answer has no file: it is a fact of its user's state (``index.users``). From
   there it is ordinary company state: the journal sensor's ``company_refresh_job``, the
   reconciliation, or any ``freshcontext ingest`` version and index it like every other
   file. There is no side door into LanceDB.
3. The process that received the answer may index it right away, through the one warm
   path (``answer_applier`` + ``submit_answers``, or ``index_answers`` once from the CLI):
   ``index.ingest.apply_company_paths`` runs the same ``sync_state`` + ``index_state`` the
   Dagster assets run, limited to the answer files and their documents, then marks their
   journal rows applied (a later sensor run finds nothing to do). If the embedder is down,
   the answer stays stored, its file written and journaled; the sensor or the next ingest
   indexes it.

After each indexing pass ``learn.review`` stamps the answers now retrievable and flags those
whose sources changed. ``submit_and_wait`` indexes answers and returns once the serving
process can return them (a staff answer posted with ``?wait=true``).
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, func, select

from context_store._common import utcnow
from context_store.errors import ConfigError, InvalidRequest, QuestionConflict
from context_store.index.embed.protocol import Embedder
from context_store.index.ingest import ApplyResult, apply_company_paths, index_state
from context_store.index.warm import WarmApplier
from context_store.learn.publish import answer_markdown, answered_payload, publication, suggested_question
from context_store.learn.review import reindex_user, review_answers
from context_store.route.outbox import enqueue
from context_store.route.policy import RoutingConfig, routing_config
from context_store.route.questions import load_question
from context_store.settings import EmbeddingConfig, SourceConfig
from context_store.state import journal
from context_store.store.context_store import ContextStore
from context_store.store.models import QuestionAsk, StaffAnswer, UserRecord, WebhookDelivery

__all__ = [
    "IndexAnswersReport",
    "answer_applier",
    "answer_files",
    "index_answers",
    "index_user_answers",
    "staff_source",
    "store_answer",
    "submit_answers",
    "write_answer_file",
    "write_pending_answer_files",
]

log = logging.getLogger(__name__)
# who applied the journal rows of an answer file indexed by the process that received it
STAFF_ANSWER = "staff-answer"


def staff_source(store: ContextStore, config: RoutingConfig | None = None) -> SourceConfig:
    """The company source answers are written to: ``routing.staff_source`` or the first of kind staff_answer."""
    config = config or routing_config(store.settings)
    for source in store.settings.company_sources:
        if (config.staff_source and source.name == config.staff_source) or (not config.staff_source and source.kind == "staff_answer"):
            return source
    wanted = f"named {config.staff_source!r}" if config.staff_source else "of kind staff_answer"
    raise ConfigError(f"no company source {wanted} in {store.settings.home / 'freshcontext.yaml'}; staff answers need one")


def store_answer(
    store: ContextStore,
    question_id: str,
    *,
    author: str,
    text: str,
    question: str | None = None,
    paraphrases: Sequence[str] = (),
    scope: str = "global",
    channel: str = "api",
    webhook_id: str | None = None,
    webhook_endpoint: str | None = None,
    body_sha256: str = "",
    config: RoutingConfig | None = None,
    now: datetime | None = None,
) -> StaffAnswer:
    """Durably store an answer with what it publishes (``learn.publish``), mark its question
    answered and queue the askers' ``question.answered`` notification, in one transaction;
    raises for unknown or already-answered questions.

    With ``webhook_endpoint``, the delivery id is recorded in the same transaction, so a
    retry of that delivery is recognised even if this process dies right after the commit.
    A ``user``-scoped answer marks that user's state for re-indexing: it becomes one of their facts.
    """
    config = config or routing_config(store.settings)
    author, text = (author or "").strip(), (text or "").strip()
    if not author:
        raise InvalidRequest("author is empty: say who answered, so the knowledge stays accountable")
    if not text:
        raise InvalidRequest("answer text is empty")
    if len(text) > config.max_answer_chars:
        raise InvalidRequest(f"answer is {len(text)} characters; the limit is {config.max_answer_chars} (routing.max_answer_chars)")
    source = staff_source(store, config) if scope != "user" else None  # fail before storing if answers have nowhere to go
    now = now or utcnow()
    with store.session() as session:
        routed = load_question(session, question_id)
        if routed.status != "open":
            raise QuestionConflict(f"question {question_id} is {routed.status}; it already has an answer or was dismissed", "already_answered")
        published = publication(routed, config, text=question, paraphrases=paraphrases, scope=scope)
        versions = list(dict.fromkeys(c["version_id"] for c in routed.context if c.get("version_id")))
        answer = StaffAnswer(
            answer_id="a-" + secrets.token_hex(8), question_id=question_id, author=author, text=text, channel=channel,
            webhook_id=webhook_id, received_at=now, source_versions=versions,
            doc_id=f"{source.name}/{question_id}.md" if source is not None else None,
            question=published.question, paraphrases=published.paraphrases, scope=published.scope, scope_user_id=published.user_id,
        )
        routed.status, routed.answered_at, routed.updated_at = "answered", now, now
        session.add_all([answer, routed])
        if published.user_id is not None:
            reindex_user(session, published.user_id)
        if webhook_id is not None and webhook_endpoint is not None:
            session.add(WebhookDelivery(
                webhook_id=webhook_id, endpoint=webhook_endpoint, received_at=now, body_sha256=body_sha256, status_code=200,
                response={"status": "stored", "answer_id": answer.answer_id, "question_id": question_id, "doc_id": answer.doc_id},
            ))
        if config.outbound_url:
            asks = session.exec(select(QuestionAsk).where(QuestionAsk.question_id == question_id).order_by(col(QuestionAsk.asked_at))).all()
            enqueue(session, "question.answered", config.outbound_url, answered_payload(routed, list(asks), answer), now=now)
    return answer


def write_answer_file(store: ContextStore, answer_id: str, *, config: RoutingConfig | None = None) -> Path:
    """Write (atomically) a global answer's Markdown file into the staff source; idempotent.

    The file holds what staff approved (``learn.publish.answer_markdown``), never the
    customer's text as it was asked.
    """
    source = staff_source(store, config)
    with store.session() as session:
        answer = session.get(StaffAnswer, answer_id)
        if answer is None:
            raise InvalidRequest(f"no staff answer {answer_id!r}")
        if answer.scope == "user" or answer.retired_at is not None:
            raise InvalidRequest(f"answer {answer_id} is {'retired' if answer.retired_at else 'scoped to one user'}; it has no document")
        if answer.question is None:  # stored before answers carried what they publish
            answer.question = suggested_question(load_question(session, answer.question_id), routing_config(store.settings))
        content = answer_markdown(answer)
        root = Path(source.path)
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{answer.question_id}.md"
        # A dot-prefixed temporary name is ignored by every source scan; rename is atomic.
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".answer-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        answer.file_path, answer.written_at = str(path), utcnow()
        answer.doc_id = f"{source.name}/{path.name}"
        session.add(answer)
    entry = journal.entry_for_path(store.settings, path)
    if entry is not None:
        journal.append(store, [entry])  # the same row the watcher writes; duplicates are dropped by fingerprint
    return path


def write_pending_answer_files(store: ContextStore) -> list[Path]:
    """Write every stored answer whose file is missing (a crash between storing and writing)."""
    with store.session() as session:
        ids = session.exec(
            select(StaffAnswer.answer_id)
            .where(col(StaffAnswer.written_at).is_(None), StaffAnswer.scope == "global", col(StaffAnswer.retired_at).is_(None))
        ).all()
    paths = []
    for answer_id in ids:
        try:
            paths.append(write_answer_file(store, answer_id))
        except OSError as exc:
            log.error("could not write staff answer %s: %s", answer_id, exc)
    return paths


@dataclass
class IndexAnswersReport:
    files: list[str] = field(default_factory=list)
    documents_changed: int = 0
    chunks_embedded: int = 0
    retrievable: list[str] = field(default_factory=list)
    flagged: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def index_answers(store: ContextStore, embedder: Embedder, paths: list[Path] | None = None) -> IndexAnswersReport:
    """Version and index the given answer files now (default: every answer not yet retrievable), then review answers.

    The one-shot form (the CLI); a serving process takes ``answer_applier`` instead, which
    coalesces a burst of answers into one pass at a time.
    """
    started = time.perf_counter()
    paths = list(paths) if paths is not None else write_pending_answer_files(store) + _unindexed_answer_files(store)
    report = IndexAnswersReport(files=[str(p) for p in paths])
    if paths:
        result = apply_company_paths(store, embedder, paths, applied_by=STAFF_ANSWER)
        report.documents_changed = len(result.company.changed_doc_ids) if result.company else 0
        report.chunks_embedded = result.company_index.chunks_embedded if result.company_index else 0
    index_user_answers(store, embedder)
    report.retrievable, report.flagged = review_answers(store)
    report.seconds = time.perf_counter() - started
    return report


def answer_applier(
    store: ContextStore, embedder: Embedder, *, embedder_for: Callable[[EmbeddingConfig], Embedder] | None = None
) -> WarmApplier:
    """The warm path of a serving process for the staff answers it receives; make one per process.

    A ``WarmApplier`` whose passes (``submit_answers``) index only the answers' own documents,
    mark their journal rows applied by ``staff-answer`` and end with ``review_answers``. It
    follows a promotion of the serving index by itself; ``embedder_for`` may hand it the
    process's already loaded model for the new index instead of loading another.
    """
    applier = WarmApplier(store, embedder, embedder_for=embedder_for, applied_by=STAFF_ANSWER)

    def review(_result: ApplyResult) -> None:
        review_answers(applier.store)  # the applier's store: it follows promotions

    applier.on_apply = review
    return applier


def submit_answers(applier: WarmApplier, answer_ids: Sequence[str], paths: Sequence[Path] = ()) -> None:
    """Index these stored answers through ``applier``, writing any file still missing; never raises.

    ``paths``: files a review rewrote or removed (``learn.approval``), indexed in the same pass
    (a removed one is tombstoned). A user-scoped answer has no file: its user's state is indexed.
    Runs in the caller's thread (a request's background task): a pass already running takes
    the answers in its next round instead. An answer whose file cannot be written, or whose
    pass fails (the embedder is down), stays stored and journaled for the next ingest.
    """
    try:
        paths = list(dict.fromkeys([*answer_files(applier.store, answer_ids), *paths]))
        if index_user_answers(applier.store, applier.embedder):
            review_answers(applier.store)
    except Exception:
        log.exception("staff answer(s) %s stored but not indexed yet; the next ingest will index them", ", ".join(answer_ids))
        return
    applier.submit(paths)


def index_user_answers(store: ContextStore, embedder: Embedder) -> bool:
    """Index the user states that user-scoped answers changed (they are facts of that user); True if any."""
    with store.session() as session:
        pending = session.exec(
            select(func.count()).select_from(UserRecord)
            .where(col(UserRecord.user_id).in_(select(StaffAnswer.scope_user_id).where(StaffAnswer.scope == "user")),
                   col(UserRecord.indexed_version_id).is_(None), col(UserRecord.current_version_id).is_not(None))
        ).one()
    if pending:
        index_state(store, embedder, "user")
    return bool(pending)


def submit_and_wait(
    applier: WarmApplier, answer_ids: Sequence[str], *, timeout: float, refresh: Callable[[float], bool] | None = None
) -> datetime | None:
    """Index these stored answers through ``applier`` and return when a retrieval can return them; None at ``timeout``.

    Retrievable means more than "LanceDB committed": the pass that indexed them has stamped
    them ``retrievable_at``, and ``refresh`` — the serving process's dense snapshot and
    in-memory text index loading the new table version (``DenseIndex.refresh``) — says it
    serves that version, so the next request finds them. The pass runs in its own thread: at
    the timeout it keeps going, and nothing stored is lost either way.
    """
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    try:
        paths = answer_files(applier.store, answer_ids)
        if index_user_answers(applier.store, applier.embedder):
            review_answers(applier.store)  # a user-scoped answer has no file: its user's state was indexed here
    except Exception:
        log.exception("staff answer(s) %s stored but not indexed yet; the next ingest will index them", ", ".join(answer_ids))
        return None
    applier.submit(paths, background=True)
    if not applier.wait_for(paths, left()):
        return None
    with applier.store.session() as session:
        stamped = [session.get(StaffAnswer, answer_id) for answer_id in answer_ids]
    if any(answer is None or answer.retrievable_at is None for answer in stamped):
        return None  # the pass failed (logged): the answer waits for the sensors or the next ingest
    if refresh is not None and not refresh(left()):
        return None
    return utcnow()


def answer_files(store: ContextStore, answer_ids: Sequence[str]) -> list[Path]:
    """The files of these answers, writing those not written yet (a crash or a full disk left them)."""
    paths = []
    for answer_id in answer_ids:
        with store.session() as session:
            answer = session.get(StaffAnswer, answer_id)
        if answer is not None and (answer.scope == "user" or answer.retired_at is not None):
            continue  # no document: a user-scoped answer is a fact of its user (index_user_answers)
        paths.append(Path(answer.file_path) if answer and answer.file_path else write_answer_file(store, answer_id))
    return paths


def _unindexed_answer_files(store: ContextStore) -> list[Path]:
    with store.session() as session:
        rows = session.exec(
            select(StaffAnswer.file_path).where(col(StaffAnswer.retrievable_at).is_(None), col(StaffAnswer.file_path).is_not(None))
        ).all()
    return [Path(p) for p in rows if p and Path(p).exists()]
