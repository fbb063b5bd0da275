"""Staff decisions on an answer already published: re-approve it, or retire it.

A flagged answer (a document version it relied on was superseded, ``learn.review``) is
served only with the reason ``staff_answer_needs_review`` and an escalation
(``route.triggers``), and a flagged user-scoped answer is withheld from its user's state,
until staff decide:

- ``approve_answer``: the answer still holds (or holds with the new text staff give). The
  flag clears and the answer now relies on the current versions of the same documents, so
  the next change to them flags it again.
- ``retire_answer``: the answer no longer holds. Its file is removed from the staff source
  and journaled, so its document is tombstoned by the next index pass (the serving process
  runs one at once); a retired answer escalates wherever it is still served meanwhile.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from context_store._common import utcnow
from context_store.errors import InvalidRequest, NotFound, QuestionConflict
from context_store.learn.answers import write_answer_file
from context_store.learn.review import reindex_user
from context_store.route.policy import routing_config
from context_store.state import journal
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, DocumentVersion, StaffAnswer

__all__ = ["answer_view", "answers_for_review", "approve_answer", "retire_answer"]

log = logging.getLogger(__name__)


def answer_view(answer: StaffAnswer) -> dict[str, Any]:
    """The JSON shape of a published answer (the review list, approve and retire responses)."""
    iso = lambda d: d.isoformat() if d else None  # noqa: E731
    return {
        "answer_id": answer.answer_id, "question_id": answer.question_id, "question": answer.question,
        "paraphrases": answer.paraphrases or [], "scope": answer.scope, "user_id": answer.scope_user_id, "text": answer.text,
        "author": answer.author, "doc_id": answer.doc_id, "received_at": iso(answer.received_at),
        "retrievable_at": iso(answer.retrievable_at), "needs_review": answer.needs_review, "review_reason": answer.review_reason,
        "flagged_at": iso(answer.flagged_at), "reviewed_at": iso(answer.reviewed_at), "reviewed_by": answer.reviewed_by,
        "retired_at": iso(answer.retired_at), "retired_by": answer.retired_by, "source_versions": answer.source_versions,
    }


def answers_for_review(store: ContextStore, *, limit: int = 200) -> list[dict[str, Any]]:
    """Flagged answers not yet re-approved or retired, oldest flag first."""
    with store.session() as session:
        rows = session.exec(
            select(StaffAnswer).where(StaffAnswer.needs_review == True, col(StaffAnswer.retired_at).is_(None))  # noqa: E712
            .order_by(col(StaffAnswer.flagged_at)).limit(limit)
        ).all()
        return [answer_view(a) for a in rows]


def _live(answer: StaffAnswer | None, answer_id: str) -> StaffAnswer:
    if answer is None:
        raise NotFound(f"no staff answer {answer_id!r}")
    if answer.retired_at is not None:
        raise QuestionConflict(f"answer {answer_id} was retired by {answer.retired_by}; answers are not brought back", "answer_retired")
    return answer


def approve_answer(
    store: ContextStore, answer_id: str, *, reviewer: str, text: str | None = None, now: datetime | None = None
) -> tuple[dict[str, Any], Path | None]:
    """Clear the flag (the answer relies on its documents' current versions now); returns the answer
    and, for a global answer whose text changed, its rewritten file (to index)."""
    reviewer, now = (reviewer or "").strip(), now or utcnow()
    if not reviewer:
        raise InvalidRequest("author is empty: say who re-approved the answer")
    config = routing_config(store.settings)
    if text is not None and not 0 < len(text.strip()) <= config.max_answer_chars:
        raise InvalidRequest(f"answer must be 1-{config.max_answer_chars} characters")
    with store.session() as session:
        answer = _live(session.get(StaffAnswer, answer_id), answer_id)
        current: list[str] = []
        for version_id in answer.source_versions:
            version = session.get(DocumentVersion, version_id)
            document = session.get(Document, version.doc_id) if version is not None else None
            if document is not None and document.current_version_id:
                current.append(document.current_version_id)
        answer.source_versions = list(dict.fromkeys(current))
        answer.needs_review, answer.review_reason, answer.reviewed_at, answer.reviewed_by = False, None, now, reviewer
        changed = text is not None and text.strip() != answer.text
        if changed:
            answer.text, answer.retrievable_at = (text or "").strip(), None
        session.add(answer)
        if answer.scope_user_id is not None:
            reindex_user(session, answer.scope_user_id)  # its fact is served again
    path = write_answer_file(store, answer_id) if changed and answer.scope == "global" else None
    return answer_view(answer), path


def retire_answer(
    store: ContextStore, answer_id: str, *, reviewer: str, note: str | None = None, now: datetime | None = None
) -> tuple[dict[str, Any], Path | None]:
    """Withdraw an answer; returns it and, for a global answer, the removed file's path (to index the tombstone)."""
    reviewer, now = (reviewer or "").strip(), now or utcnow()
    if not reviewer:
        raise InvalidRequest("author is empty: say who retired the answer")
    with store.session() as session:
        answer = _live(session.get(StaffAnswer, answer_id), answer_id)
        answer.retired_at, answer.retired_by, answer.needs_review = now, reviewer, False
        answer.review_reason = f"retired by {reviewer}" + (f": {note.strip()}" if note and note.strip() else "")
        session.add(answer)
        if answer.scope_user_id is not None:
            reindex_user(session, answer.scope_user_id)
    path = Path(answer.file_path) if answer.file_path else None
    if path is not None:
        path.unlink(missing_ok=True)
        entry = journal.entry_for_path(store.settings, path, deleted=True)
        if entry is not None:
            journal.append(store, [entry])
    log.info("staff answer %s retired by %s", answer_id, reviewer)
    return answer_view(answer), path
