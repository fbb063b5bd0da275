"""Review of the learning loop: which answers are retrievable, which went stale, and the numbers.

``mark_retrievable`` stamps ``retrievable_at`` on answers whose document is indexed,
whichever path indexed it (the warm path, a sensor run, the CLI). ``flag_superseded_answers``
marks an answer for review when a document version it relied on has been superseded or
deleted: the policy it paraphrased may have changed, and a flagged answer is not served as a
confident answer until staff re-approve or retire it. ``learning_metrics`` turns the
loop into numbers: time to knowledge, reuse without a person, escalations, queue ages.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from context_store._common import percentile, utcnow
from context_store.route.questions import count_by_status, open_question_ages
from context_store.store.context_store import ContextStore
from context_store.store.models import AskedQuestion, Document, DocumentVersion, StaffAnswer, UserRecord, UserSnapshotVersion

__all__ = ["flag_superseded_answers", "learning_metrics", "mark_retrievable", "reindex_user", "review_answers"]

log = logging.getLogger(__name__)


def review_answers(store: ContextStore) -> tuple[list[str], int]:
    """After an indexing pass: stamp answers now retrievable, flag answers whose sources changed."""
    return mark_retrievable(store), flag_superseded_answers(store)


def mark_retrievable(store: ContextStore) -> list[str]:
    """Stamp ``retrievable_at`` on answers now served: a global answer's document is indexed (by any
    path: warm, sensor, CLI), a user-scoped answer's user state was indexed again after it was stored."""
    stamped: list[str] = []
    with store.session() as session:
        rows = session.exec(
            select(StaffAnswer, DocumentVersion)
            .join(Document, col(Document.doc_id) == col(StaffAnswer.doc_id))
            .join(DocumentVersion, col(DocumentVersion.version_id) == col(Document.current_version_id))
            .where(col(StaffAnswer.retrievable_at).is_(None), col(Document.indexed_version_id) == col(Document.current_version_id))
        ).all()
        rows += session.exec(
            select(StaffAnswer, UserSnapshotVersion)
            .join(UserRecord, col(UserRecord.user_id) == col(StaffAnswer.scope_user_id))
            .join(UserSnapshotVersion, col(UserSnapshotVersion.version_id) == col(UserRecord.current_version_id))
            .where(col(StaffAnswer.retrievable_at).is_(None), StaffAnswer.scope == "user", col(StaffAnswer.retired_at).is_(None),
                   col(UserRecord.indexed_version_id) == col(UserRecord.current_version_id))
        ).all()
        for answer, version in rows:
            answer.retrievable_at = version.indexed_at or utcnow()
            session.add(answer)
            stamped.append(answer.answer_id)
    return stamped


def reindex_user(session: Session, user_id: str) -> None:
    """Mark a user's state pending, so the next index pass writes their facts again (with or
    without a user-scoped answer)."""
    user = session.get(UserRecord, user_id)
    if user is not None and user.indexed_version_id is not None:
        user.indexed_version_id = None
        session.add(user)


def flag_superseded_answers(store: ContextStore, *, now: datetime | None = None) -> int:
    """Flag answers relying on a document version that is no longer current; returns how many were newly flagged."""
    now = now or utcnow()
    flagged = 0
    with store.session() as session:
        answers = session.exec(
            select(StaffAnswer).where(StaffAnswer.needs_review == False, col(StaffAnswer.retired_at).is_(None))  # noqa: E712
        ).all()
        wanted = {v for a in answers for v in a.source_versions}
        ended: dict[str, DocumentVersion] = {}
        if wanted:
            for version in session.exec(
                select(DocumentVersion).where(col(DocumentVersion.version_id).in_(wanted), col(DocumentVersion.valid_to).is_not(None))
            ).all():
                ended[version.version_id] = version
        for answer in answers:
            gone = [ended[v] for v in answer.source_versions if v in ended]
            if not gone:
                continue
            answer.needs_review, answer.flagged_at = True, now
            answer.review_reason = "; ".join(
                f"{v.doc_id} version {v.version_id} ended {v.valid_to.isoformat() if v.valid_to else '?'}" for v in gone
            ) + " — the answer may be stale"
            session.add(answer)
            if answer.scope_user_id is not None:
                reindex_user(session, answer.scope_user_id)  # its fact is withheld until staff re-approve it
            flagged += 1
    if flagged:
        log.warning("%d staff answer(s) flagged for review: a source they relied on changed", flagged)
    return flagged


def learning_metrics(store: ContextStore, *, now: datetime | None = None) -> dict[str, Any]:
    """Learning-loop numbers: time to knowledge, reuse without a person, escalation rate, queue ages, stale answers."""
    mark_retrievable(store)
    with store.session() as session:
        answers = list(session.exec(select(StaffAnswer)).all())
        ttk = [
            (a.retrievable_at - a.received_at).total_seconds() for a in answers if a.retrievable_at is not None and a.received_at is not None
        ]
        total = session.exec(select(func.count()).select_from(AskedQuestion)).one()
        escalated = session.exec(select(func.count()).select_from(AskedQuestion).where(AskedQuestion.decision == "escalate")).one()
        # Asked after an answer became retrievable, answered (no person) with that answer on top.
        reused = 0
        by_doc = {a.doc_id: a for a in answers if a.doc_id and a.retrievable_at is not None}
        if by_doc:
            for doc_id, asked_at in session.exec(
                select(AskedQuestion.top_doc_id, AskedQuestion.asked_at)
                .where(AskedQuestion.decision == "answer", col(AskedQuestion.top_doc_id).in_(list(by_doc)))
            ).all():
                if asked_at >= by_doc[doc_id].retrievable_at:
                    reused += 1
        statuses = count_by_status(session)
    return {
        "answers": len(answers),
        "answers_retrievable": len(ttk),
        "answers_pending_index": sum(1 for a in answers if a.retrievable_at is None),
        "answers_flagged_stale": sum(1 for a in answers if a.needs_review),
        "answers_retired": sum(1 for a in answers if a.retired_at is not None),
        "time_to_knowledge_p50_s": percentile(ttk, 50),
        "time_to_knowledge_p95_s": percentile(ttk, 95),
        "reasked_answered_without_person": reused,
        "questions_assessed": int(total),
        "escalations": int(escalated),
        "escalation_rate": (escalated / total) if total else None,
        "questions_by_status": statuses,
        "open_questions_by_age": open_question_ages(store, now=now),
    }
