"""Embed user facts and project pending user snapshot versions into LanceDB.

A user's current snapshot is a handful of facts, each embedded once by text (the SQL
embedding cache), then written as one row per fact. A staff answer scoped to that user
(``learn.publish``) is one more fact of theirs while it is approved and not retired: it is
served to that user alone, because every user-state query is filtered by user id. Users are loaded under the ``user``
lineage lock, embedded without it, and committed in groups under it again after
re-reading which of them are still pending with the version this run prepared
(``index.plan.still_pending``), so concurrent runs never index a user twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from context_store._common import sha256, utcnow
from context_store.index.embed.cache import embed_cached
from context_store.index.embed.protocol import Embedder
from context_store.index.plan import IndexReport, pending_clause, still_pending
from context_store.store.context_store import ContextStore
from context_store.store.database import in_batches, lineage_lock
from context_store.store.models import StaffAnswer, UserRecord, UserSnapshotVersion
from context_store.store.vector_index import USER_TABLE

__all__ = ["answer_facts", "fact_id_for", "index_pending_users"]

_Work = list[tuple[UserRecord, UserSnapshotVersion | None]]


def fact_id_for(user_id: str, fact_key: str, text: str) -> str:
    return f"{user_id}#{fact_key}#{sha256(text)[:12]}"


def index_pending_users(store: ContextStore, embedder: Embedder, *, group_size: int = 256) -> IndexReport:
    """Embed and index every pending user's current snapshot (or remove a deleted user's rows), in groups."""
    started = time.perf_counter()
    report = IndexReport()
    store.ensure_current_deployment()
    with store.session() as session:
        lineage_lock(session, "user")  # users are loaded and their facts chunked consistently
        work = _pending_users(session)
        answers = answer_facts(session, [u.user_id for u, _ in work])
        session.commit()  # releases the lock: embedding does not need it
        if work:
            facts = {u.user_id: [*v.facts, *answers.get(u.user_id, [])] for u, v in work if v}
            texts = {sha256(fact["text"]): fact["text"] for user_facts in facts.values() for fact in user_facts}
            report.chunks_total = sum(len(f) for f in facts.values())
            vectors, embedded = embed_cached(session, embedder, texts)
            report.chunks_embedded = embedded
            report.chunks_reused = report.chunks_total - embedded
            dim = int(next(iter(vectors.values())).shape[0]) if vectors else embedder.dim
            for start in range(0, len(work), group_size):
                _commit_group(session, store, work[start : start + group_size], facts, vectors, dim, report)
    report.rows_in_table = store.index.count(USER_TABLE)
    report.seconds = time.perf_counter() - started
    return report


def _pending_users(session: Session) -> _Work:
    users = session.exec(
        select(UserRecord)
        .where(pending_clause(col(UserRecord.current_version_id), col(UserRecord.indexed_version_id)))
        .order_by(UserRecord.user_id)
    ).all()
    return [(u, session.get(UserSnapshotVersion, u.current_version_id) if u.current_version_id else None) for u in users]


def answer_facts(session: Session, user_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """The user-scoped staff answers of these users, as facts (approved, not retired, not awaiting review)."""
    out: dict[str, list[dict[str, str]]] = {}
    if not user_ids:
        return out
    for part in in_batches(user_ids):
        for answer in session.exec(
            select(StaffAnswer).where(
                StaffAnswer.scope == "user", col(StaffAnswer.scope_user_id).in_(part), col(StaffAnswer.retired_at).is_(None),
                StaffAnswer.needs_review == False,  # noqa: E712
            ).order_by(col(StaffAnswer.received_at))
        ).all():
            out.setdefault(answer.scope_user_id or "", []).append(
                {"key": f"staff_answer/{answer.answer_id}", "text": f"staff answer — {answer.question}: {answer.text}"}
            )
    return out


def _commit_group(
    session: Session, store: ContextStore, part: _Work, facts: dict[str, list[dict[str, str]]], vectors: dict[str, np.ndarray],
    dim: int, report: IndexReport,
) -> None:
    """One LanceDB commit for the users of ``part`` still pending as prepared, then SQL records it."""
    lineage_lock(session, "user")
    live = still_pending(session, UserRecord, "user_id", [(u.user_id, u.current_version_id, (u, v)) for u, v in part])
    report.items_skipped_concurrent += len(part) - len(live)
    group = [pair for _, _, pair in live]
    if not group:
        session.commit()
        return
    now = utcnow()
    rows = [
        _fact_row(user, version, fact, vectors[sha256(fact["text"])], now)
        for user, version in group
        if version is not None
        for fact in _unique_facts(facts.get(user.user_id, version.facts))
    ]
    store.index.replace_users([u.user_id for u, _ in group], rows, dim)
    report.lancedb_commits += 1
    for user, version in group:
        user.indexed_version_id = user.current_version_id
        session.add(user)
        if version is not None:
            version.indexed_at = now
            session.add(version)
            report.items_indexed += 1
        else:
            report.items_removed += 1
        report.indexed_ids.append(user.user_id)
    session.commit()


def _fact_row(user: UserRecord, version: UserSnapshotVersion, fact: dict[str, str], vector: np.ndarray, now: Any) -> dict[str, Any]:
    return {
        "fact_id": fact_id_for(user.user_id, fact["key"], fact["text"]),
        "user_id": user.user_id,
        "version_id": version.version_id,
        "fact_key": fact["key"],
        "text": fact["text"],
        "captured_at": version.captured_at,
        "indexed_at": now,
        "vector": vector,
    }


def _unique_facts(facts: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for fact in facts:
        key = (fact["key"], fact["text"])
        if key not in seen:
            seen.add(key)
            out.append(fact)
    return out
