"""The learning loop: a staff answer is stored, becomes a company document, and is served next time.

Order matters, because nothing may be lost:

1. ``store_answer`` writes the ``StaffAnswer`` row and marks the question answered, in one
   transaction. Only then does the webhook return 2xx.
2. ``write_answer_file`` writes the answer as Markdown (front matter: question id, answer
   id, author, the document versions it was given) into the configured company source of
   kind ``staff_answer`` and appends it to the change journal (as the watcher would). From
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

import yaml
from sqlmodel import col, select

from context_store._common import utcnow
from context_store.errors import ConfigError, InvalidRequest, QuestionConflict
from context_store.index.embed.protocol import Embedder
from context_store.index.ingest import ApplyResult, apply_company_paths
from context_store.index.warm import WarmApplier
from context_store.learn.review import review_answers
from context_store.route.policy import RoutingConfig, routing_config
from context_store.route.questions import load_question
from context_store.settings import EmbeddingConfig, SourceConfig
from context_store.state import journal
from context_store.store.context_store import ContextStore
from context_store.store.models import QuestionAsk, RoutedQuestion, StaffAnswer, WebhookDelivery

__all__ = [
    "IndexAnswersReport",
    "answer_applier",
    "answer_files",
    "answer_markdown",
    "index_answers",
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
    channel: str = "api",
    webhook_id: str | None = None,
    webhook_endpoint: str | None = None,
    body_sha256: str = "",
    config: RoutingConfig | None = None,
    now: datetime | None = None,
) -> StaffAnswer:
    """Durably store an answer and mark its question answered; raises for unknown or already-answered questions.

    With ``webhook_endpoint``, the delivery id is recorded in the same transaction, so a
    retry of that delivery is recognised even if this process dies right after the commit.
    """
    config = config or routing_config(store.settings)
    author, text = (author or "").strip(), (text or "").strip()
    if not author:
        raise InvalidRequest("author is empty: say who answered, so the knowledge stays accountable")
    if not text:
        raise InvalidRequest("answer text is empty")
    if len(text) > config.max_answer_chars:
        raise InvalidRequest(f"answer is {len(text)} characters; the limit is {config.max_answer_chars} (routing.max_answer_chars)")
    source = staff_source(store, config)  # fail before storing if answers have nowhere to go
    now = now or utcnow()
    with store.session() as session:
        question = load_question(session, question_id)
        if question.status != "open":
            raise QuestionConflict(f"question {question_id} is {question.status}; it already has an answer or was dismissed", "already_answered")
        versions = list(dict.fromkeys(c["version_id"] for c in question.context if c.get("version_id")))
        answer = StaffAnswer(
            answer_id="a-" + secrets.token_hex(8), question_id=question_id, author=author, text=text, channel=channel,
            webhook_id=webhook_id, received_at=now, source_versions=versions,
            doc_id=f"{source.name}/{question_id}.md",
        )
        question.status, question.answered_at, question.updated_at = "answered", now, now
        session.add_all([answer, question])
        if webhook_id is not None and webhook_endpoint is not None:
            session.add(WebhookDelivery(
                webhook_id=webhook_id, endpoint=webhook_endpoint, received_at=now, body_sha256=body_sha256, status_code=200,
                response={"status": "stored", "answer_id": answer.answer_id, "question_id": question_id, "doc_id": answer.doc_id},
            ))
    return answer


def answer_markdown(question: RoutedQuestion, answer: StaffAnswer, paraphrases: list[str]) -> str:
    """The document an answer becomes: the question as heading, so the question and its paraphrases find it."""
    front = {
        "title": question.text[:200],
        "kind": "staff_answer",
        "question_id": question.question_id,
        "answer_id": answer.answer_id,
        "author": answer.author,
        "answered_at": answer.received_at.isoformat(),
        "source_versions": ",".join(answer.source_versions),
    }
    asked = [p for p in dict.fromkeys(paraphrases) if p.strip() and p.strip() != question.text.strip()]
    also = ("\n\nAlso asked as: " + " / ".join(a.strip() for a in asked[:5])) if asked else ""
    heading = " ".join(question.text.split())
    return f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n# {heading}\n\n{answer.text.strip()}{also}\n"


def write_answer_file(store: ContextStore, answer_id: str, *, config: RoutingConfig | None = None) -> Path:
    """Write (atomically) the answer's Markdown file into the staff source; idempotent."""
    source = staff_source(store, config)
    with store.session() as session:
        answer = session.get(StaffAnswer, answer_id)
        if answer is None:
            raise InvalidRequest(f"no staff answer {answer_id!r}")
        question = load_question(session, answer.question_id)
        asks = session.exec(select(QuestionAsk.text).where(QuestionAsk.question_id == question.question_id)).all()
        content = answer_markdown(question, answer, list(asks))
        root = Path(source.path)
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{question.question_id}.md"
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
        ids = session.exec(select(StaffAnswer.answer_id).where(col(StaffAnswer.written_at).is_(None))).all()
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


def submit_answers(applier: WarmApplier, answer_ids: Sequence[str]) -> None:
    """Index these stored answers through ``applier``, writing any file still missing; never raises.

    Runs in the caller's thread (a request's background task): a pass already running takes
    the answers in its next round instead. An answer whose file cannot be written, or whose
    pass fails (the embedder is down), stays stored and journaled for the next ingest.
    """
    try:
        paths = answer_files(applier.store, answer_ids)
    except Exception:
        log.exception("staff answer(s) %s stored but not indexed yet; the next ingest will index them", ", ".join(answer_ids))
        return
    applier.submit(paths)


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
            path = answer.file_path if answer else None
        paths.append(Path(path) if path else write_answer_file(store, answer_id))
    return paths


def _unindexed_answer_files(store: ContextStore) -> list[Path]:
    with store.session() as session:
        rows = session.exec(
            select(StaffAnswer.file_path).where(col(StaffAnswer.retrievable_at).is_(None), col(StaffAnswer.file_path).is_not(None))
        ).all()
    return [Path(p) for p in rows if p and Path(p).exists()]
