"""Which open question a new one joins: the vectors of open questions, kept per process.

``route.questions`` groups a new escalation with the nearest open question of its kind when
the cosine reaches ``group_similarity``; this module answers "which is nearest" without
reading every open question on every escalation.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import bindparam, update
from sqlmodel import col, select

from context_store._common import utcnow
from context_store.route.recording import Writes
from context_store.route.triggers import from_vector
from context_store.store.database import in_batches
from context_store.store.models import RoutedQuestion

__all__ = ["join_nearest_open", "remember_open"]


class _OpenVectors:
    """Vectors of open questions, per process, as rows of one matrix that grows in place.

    A question's vector never changes and a question never returns to ``open``, so the set
    needs three kinds of news, none of which costs a request more than the product with the
    matrix (~0.1 ms at 3,000 open questions):

    * this process's own new questions: added as they are queued (``add``, amortised O(1));
    * questions other processes queued: at most every ``REFRESH_S`` the ids created in the
      last ``SLACK_S`` seconds are read (the slack covers a creation time stamped before its
      transaction committed), and only unknown ones are fetched;
    * questions that left ``open``: a nearest one at or above the grouping similarity is
      re-read before a question joins it, and dropped when closed (its row is zeroed, so it
      never wins again); every ``FULL_REFRESH_S`` the open ids are read whole, which drops
      the rest. Re-reading every open id each second cost ~5 ms a request with ~1,200 open
      questions, and rebuilding the matrix on every escalation grew with the queue too.
    """

    REFRESH_S = 1.0
    SLACK_S = 10.0
    FULL_REFRESH_S = 60.0

    def __init__(self) -> None:
        self.ids: list[str | None] = []  # row -> question id (None: dropped)
        self.row_of: dict[str, int] = {}
        self.matrix = np.zeros((0, 0), dtype=np.float32)  # capacity rows; the first len(ids) are in use
        self.refreshed_at = -1e18
        self.full_refresh_at = -1e18
        self.lock = threading.Lock()

    @property
    def vectors(self) -> dict[str, np.ndarray]:
        """Open question id -> vector (for inspection; requests use the matrix)."""
        with self.lock:
            return {i: self.matrix[row].copy() for i, row in self.row_of.items()}

    def _refresh(self, writes: Writes, model: str, kind: str) -> None:
        now = time.monotonic()
        full = now - self.full_refresh_at >= self.FULL_REFRESH_S
        if full:
            ids = set(writes.execute(select(RoutedQuestion.question_id).where(
                RoutedQuestion.status == "open", RoutedQuestion.model == model, RoutedQuestion.kind == kind
            )).scalars().all())
        else:
            # Only the creation time in SQL, so the range is read from its index: with the kind's
            # index SQLite scanned every question row of the kind (4 ms of CPU at 2,600 questions) every second.
            recent = writes.execute(
                select(RoutedQuestion.question_id, RoutedQuestion.status, RoutedQuestion.model, RoutedQuestion.kind)
                .where(col(RoutedQuestion.created_at) >= utcnow() - timedelta(seconds=self.SLACK_S))
            ).all()
            ids = {i for i, status, m, k in recent if status == "open" and m == model and k == kind}
        if full:
            for gone in [i for i in self.row_of if i not in ids]:  # closed questions leave the cache
                self._drop(gone)
            self.full_refresh_at = now
        missing = sorted(i for i in ids if i not in self.row_of)
        for part in in_batches(missing, 500):
            for question_id, blob in writes.execute(
                select(RoutedQuestion.question_id, RoutedQuestion.vector).where(col(RoutedQuestion.question_id).in_(part))
            ).all():
                self._add(question_id, from_vector(blob))
        self.refreshed_at = now

    def _add(self, question_id: str, vector: np.ndarray) -> None:
        if question_id in self.row_of:
            return
        if not self.ids or self.matrix.shape[1] != vector.shape[0]:
            if self.row_of:
                return  # another dimension than the open questions of this model: cannot be compared
            self.ids, self.matrix = [], np.zeros((64, vector.shape[0]), dtype=np.float32)
        n = len(self.ids)
        if n == self.matrix.shape[0]:
            self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])  # double: amortised O(1)
        self.matrix[n] = vector
        self.ids.append(question_id)
        self.row_of[question_id] = n

    def _drop(self, question_id: str) -> None:
        row = self.row_of.pop(question_id, None)
        if row is None:
            return
        self.matrix[row] = 0.0  # a zero row scores 0, below any grouping similarity
        self.ids[row] = None
        if len(self.row_of) * 2 < len(self.ids) and len(self.ids) > 64:  # mostly dropped rows: compact
            keep = list(self.row_of.items())
            self.ids = [i for i, _ in keep]
            self.matrix = np.concatenate([self.matrix[[r for _, r in keep]], np.zeros((max(64, len(keep)), self.matrix.shape[1]), np.float32)])
            self.row_of = {i: r for r, i in enumerate(self.ids)}

    def add(self, question_id: str, vector: np.ndarray) -> None:
        with self.lock:
            self._add(question_id, np.asarray(vector, dtype=np.float32))

    def drop(self, question_id: str) -> None:
        with self.lock:
            self._drop(question_id)

    def nearest(self, writes: Writes, vector: np.ndarray, model: str, kind: str) -> tuple[str | None, float]:
        with self.lock:
            if time.monotonic() - self.refreshed_at >= self.REFRESH_S:
                self._refresh(writes, model, kind)
            n = len(self.ids)
            if not self.row_of or self.matrix.shape[1] != vector.shape[0]:
                return None, -1.0
            sims = self.matrix[:n] @ vector
            i = int(np.argmax(sims))
            return self.ids[i], float(sims[i])


_OPEN: dict[tuple[str, str, str], _OpenVectors] = {}
_OPEN_LOCK = threading.Lock()


def _open_cache(writes: Writes, model: str, kind: str) -> _OpenVectors:
    key = (writes.url, model, kind)
    with _OPEN_LOCK:
        return _OPEN.setdefault(key, _OpenVectors())


_QUESTIONS = RoutedQuestion.__table__  # type: ignore[attr-defined]
# Joining is one statement that only succeeds on a question still open: no ORM load of the
# question, no unit of work to flush (~0.8 ms of a request's CPU in bench/latency.py, where most escalations join).
# RETURNING reads the new count in the same statement (SQLite >= 3.35, PostgreSQL): no second round trip.
_JOIN = (
    update(_QUESTIONS)
    .where(_QUESTIONS.c.question_id == bindparam("qid"), _QUESTIONS.c.status == "open")
    .values(ask_count=_QUESTIONS.c.ask_count + 1, updated_at=bindparam("at"))
    .returning(_QUESTIONS.c.ask_count)
)


def join_nearest_open(
    writes: Writes, vector: np.ndarray, model: str, kind: str, similarity: float, now: datetime
) -> tuple[str | None, float, int]:
    """Join the open question of ``kind`` most similar to ``vector`` if it is at least ``similarity``
    close: (its id, the similarity, its ask count with this ask), in the caller's transaction;
    (None, the best similarity, 0) when none is close enough. A question that has left ``open``
    since the cache saw it is dropped and the next nearest is tried."""
    cache = _open_cache(writes, model, kind)
    for _ in range(5):  # more than a few closed in the last second means the cache is stale: refresh
        question_id, sim = cache.nearest(writes, vector, model, kind)
        if question_id is None or sim < similarity:
            return None, sim, 0
        joined = writes.execute(_JOIN, {"qid": question_id, "at": now}).first()
        if joined is not None:
            return question_id, sim, int(joined[0])
        cache.drop(question_id)  # closed, or gone: the next nearest() no longer sees it
    cache.refreshed_at = cache.full_refresh_at = -1e18
    return None, -1.0, 0


def remember_open(writes: Writes, model: str, kind: str, question_id: str, vector: np.ndarray) -> None:
    """A question this process just queued: seen by its next escalation at once (others' within
    ``REFRESH_S``); a rollback leaves an id whose row is missing, which ``join_nearest_open`` drops."""
    _open_cache(writes, model, kind).add(question_id, vector)
