"""Retrieval of current company chunks and one user's current state for a question.

Dense candidates come from an in-memory snapshot of the LanceDB table (``DenseIndex``;
LanceDB itself when none is given), full-text candidates from the snapshot's own BM25 or
LanceDB's native FTS index; ``fusion`` combines them. Whatever the rankers return, a chunk
is only served if SQL says its document version is current *now* — LanceDB and the
snapshot are projections, and a projection that lags must never put a superseded text in
an answer. Point-in-time requests (``as_of``) are answered by ``as_of`` from SQL alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import bindparam
from sqlalchemy import select as sa_select

from context_store.errors import InvalidRequest, UnknownUser
from context_store.index.embed.protocol import Embedder
from context_store.retrieve.as_of import facts_at, parse_as_of, search_as_of, user_snapshot_at
from context_store.retrieve.dense_index import DenseIndex
from context_store.retrieve.features import pool_features
from context_store.retrieve.filters import check_filters, lance_where, row_mask
from context_store.retrieve.fusion import Candidate, rank
from context_store.retrieve.fusion_model import FusionModel, load_fusion_model
from context_store.retrieve.pool import Pool, Ranked, Rows, merge
from context_store.retrieve.result import Hit, RetrievalResult, UserFact, hit_from
from context_store.retrieve.text_index import top_positive
from context_store.settings import RetrievalConfig
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, DocumentVersion, UserRecord, UserSnapshotVersion
from context_store.store.vector_index import VectorIndex, quote

__all__ = ["MAX_K", "MAX_QUERY_CHARS", "MODES", "Retriever", "retrieve"]

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000
MAX_K = 100
MODES = ("hybrid", "vector", "text", "rrf")
_ROW_COLUMNS = [
    "chunk_id", "doc_id", "version_id", "chunk_hash", "ordinal", "kind", "title", "heading", "text",
    "source_path", "source_changed_at", "indexed_at",
]


# A version is current when its document points at it; ``ids`` expands to the candidates' versions.
_CURRENT_VERSIONS = (
    sa_select(DocumentVersion.__table__.c.version_id, DocumentVersion.__table__.c.content_hash)
    .join(Document.__table__, Document.__table__.c.current_version_id == DocumentVersion.__table__.c.version_id)
    .where(DocumentVersion.__table__.c.version_id.in_(bindparam("ids", expanding=True)))
)


class Retriever:
    """Answers retrieval requests for one store; holds the dense snapshot and the query encoder.

    Create one per process and share it between requests (it is thread-safe).
    """

    def __init__(
        self,
        store: ContextStore,
        embedder: Embedder,
        *,
        config: RetrievalConfig | None = None,
        dense: DenseIndex | None = None,
        reranker: Any = None,
        index: VectorIndex | None = None,
        fusion: FusionModel | None = None,
    ) -> None:
        self.store = store
        self.index = index if index is not None else store.index  # a server passes its ``reader()``
        self.embedder = embedder
        self.config = config or store.settings.retrieval
        self.dense = dense
        self.reranker = reranker
        self.fusion = fusion or load_fusion_model()  # hybrid's weights and the text ranker's heading weight

    # -- the request ---------------------------------------------------------------------

    def retrieve(
        self,
        query: str,
        *,
        user_id: str | None = None,
        k: int = 5,
        as_of: str | datetime | None = None,
        filters: Mapping[str, Any] | None = None,
        mode: str | None = None,
    ) -> RetrievalResult:
        started = time.perf_counter()
        query = (query or "").strip()
        if not query:
            raise InvalidRequest("query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidRequest(f"k must be between 1 and {MAX_K}, got {k}")
        mode = mode or self.config.mode
        if mode not in MODES:
            raise InvalidRequest(f"mode {mode!r} is not one of {', '.join(MODES)}")
        when = parse_as_of(as_of)
        checked = check_filters(filters)
        result = RetrievalResult(query=query, results=[], mode=mode, k=k, as_of=when, filters=checked, model=self.embedder.name)
        if user_id is not None:
            self._check_user(user_id, when)  # before any work: an unknown user is the caller's mistake
        t = time.perf_counter()
        vector = result.query_vector = self.embedder.encode([query])[0]
        result.timings_ms["encode"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        if when is None:
            self._current(result, vector, checked)
        else:
            with self.store.session() as session:
                search_as_of(
                    session, self.embedder, result, vector, when, checked, config=self.config,
                    chunking=self.store.settings.chunking, fusion=self.fusion,
                )
        result.timings_ms["search"] = (time.perf_counter() - t) * 1000
        if user_id is not None:
            t = time.perf_counter()
            self._user_state(result, user_id, vector, when)
            result.timings_ms["user_state"] = (time.perf_counter() - t) * 1000
        result.timings_ms["total"] = (time.perf_counter() - started) * 1000
        return result

    def rank_with_features(self, query: str, *, mode: str, depth: int = 100) -> tuple[list[Hit], dict[str, float]]:
        """Current chunks, fused and checked, up to ``depth`` of them, and the confidence features (evaluations)."""
        vector = self.embedder.encode([query])[0]
        result = RetrievalResult(query=query, results=[], mode=mode, k=depth)
        self._current(result, vector, {}, candidates=max(depth, self.config.candidates))
        return result.results, result.features

    def fusion_inputs(self, query: str, *, depth: int = 100) -> tuple[list[Candidate], list[str], float | None]:
        """The candidates ``hybrid`` fusion sees for ``query``, unfused, their documents, and the most the
        query could score on the text side (None: the ranker cannot say) (training)."""
        vector = self.embedder.encode([query])[0]
        result = RetrievalResult(query=query, results=[], mode="hybrid", k=depth)
        pool, rows, mass = self._candidates(result, vector, {}, max(depth, self.config.candidates))
        return [pool.candidate(i, rows.value(i, "chunk_id")) for i in range(len(pool))], [rows.value(i, "doc_id") for i in range(len(pool))], mass

    # -- current state -------------------------------------------------------------------

    def _current(self, result: RetrievalResult, vector: np.ndarray, filters: dict[str, list[str]], *, candidates: int | None = None) -> None:
        pool, rows, mass = self._candidates(result, vector, filters, candidates or self.candidate_count(result.k))
        order, scores = rank(result.mode, pool, model=self.fusion, text_mass=mass)
        top_changed = rows.value(int(order[0]), "source_changed_at") if len(order) else None
        result.features = pool_features(pool, order, scores, top_changed)
        self._serve_current(result, pool, order, scores, rows)

    def candidate_count(self, k: int) -> int:
        """How many candidates each ranker is asked for when ``k`` results are served."""
        return max(self.config.candidates, k * 2)

    def _candidates(self, result: RetrievalResult, vector: np.ndarray, filters: dict[str, list[str]], n: int) -> tuple[Pool, Rows, float | None]:
        """The dense and full-text top ``n`` as one pool; where their rows are; the most the query could
        score on the text side (the in-memory ranker's ``query_mass``; None otherwise).

        Both rankers read one snapshot, taken once here, so row numbers, the filter mask and the
        reported table version all belong to the same table version."""
        snap = self.dense.snapshot() if self.dense is not None else None
        mask = row_mask(filters, snap.meta["kind"], snap.meta["doc_id"]) if snap is not None and filters else None
        dense = self._dense_hits(result, vector, filters, n, snap, mask) if result.mode != "text" else None
        text, full = self._text_hits(result.query, n, filters, snap, mask) if result.mode != "vector" else (None, None)
        pool, rows, text_only = merge(dense, text, snap)
        if len(text_only) and dense is not None:  # score the text-only candidates on the dense side too (fusion needs both), in one product
            matrix = rows.vectors(text_only)
            norms = np.linalg.norm(matrix, axis=1)
            pool.cos[text_only] = matrix @ vector / np.where(norms == 0, 1.0, norms)
        mass = None
        if full is not None and result.mode == "hybrid":
            # Learned fusion weighs every candidate's text evidence: BM25 of the dense candidates
            # below the text top ``n`` too (the in-memory ranker has scored every row already).
            below = np.flatnonzero(np.isnan(pool.text))
            scored = full[rows.rows[below]].astype(np.float64)
            pool.text[below] = np.where(scored > 0, scored, np.nan)
            mass = snap.text_mass(result.query, heading_weight=self.fusion.heading_weight)
        # What this request read; the dense index looked the versions up at most one refresh
        # interval ago, so no request waits for LanceDB's answer.
        result.table_versions = self.dense.table_versions() if self.dense is not None else self.index.versions()
        if snap is not None:
            result.table_versions[self.index.company_table_name] = snap.version
        return pool, rows, mass

    def _dense_hits(
        self, result: RetrievalResult, vector: np.ndarray, filters: dict[str, list[str]], n: int, snap: Any, mask: np.ndarray | None
    ) -> Ranked:
        """Dense top ``n``, from ``snap`` (LanceDB's when there is no dense index)."""
        if snap is None:
            index = self.index
            found = index.vector_search(index.company_table_name, vector, n, where=lance_where(filters))
            return Ranked.of_rows(found, [1.0 - float(r.get("_distance", 1.0)) for r in found])
        assert self.dense is not None
        _, idx, scores = self.dense.search(vector, n, mask=mask, snap=snap)
        result.dense_snapshot_version = snap.version
        return Ranked(idx.tolist(), scores.astype(np.float64), idx.astype(np.int64))

    def _text_hits(
        self, query: str, n: int, filters: dict[str, list[str]], snap: Any, mask: np.ndarray | None
    ) -> tuple[Ranked, np.ndarray | None]:
        """Full-text top ``n``, and the in-memory ranker's score of every row of ``snap`` when it answered.

        ``text_ranker: memory`` (with a dense snapshot): BM25 over the snapshot's own rows, the
        title and heading trail weighed as a field of their own (``text_index``, ~1-2 ms at 100k
        rows against ~12 ms for LanceDB's FTS). Otherwise LanceDB's FTS index; with a dense
        snapshot only ids come from LanceDB (measured at 100k rows: 15 ms for ids against 58 ms
        with text and vectors) and rows the snapshot does not hold yet (a newer table version)
        are fetched whole."""
        if snap is not None and self.config.text_ranker == "memory":
            assert self.dense is not None
            found = self.dense.text_scores(query, heading_weight=self.fusion.heading_weight, snap=snap)
            if found is not None:
                full = found[1]
                idx, scores = top_positive(full, n, mask=mask)
                return Ranked(idx.tolist(), scores.astype(np.float64), idx), full
        index = self.index
        if snap is None:
            found_rows = index.text_search(index.company_table_name, query, n, where=lance_where(filters), columns=[*_ROW_COLUMNS, "vector"])
            return Ranked.of_rows(found_rows, [float(r["_score"]) for r in found_rows]), None
        hits = index.text_search(index.company_table_name, query, n, where=lance_where(filters), columns=["chunk_id"])
        missing = [h["chunk_id"] for h in hits if h["chunk_id"] not in snap.row_of]
        fetched = {}
        if missing:
            where = "chunk_id IN (" + ", ".join(quote(c) for c in missing) + ")"
            fetched = {r["chunk_id"]: r for r in index.rows(index.company_table_name, where, columns=[*_ROW_COLUMNS, "vector"])}
        ids: list[Any] = []
        scores: list[float] = []
        rows: list[int] = []
        held: dict[int, dict[str, Any]] = {}  # by position: rows the snapshot lacks, fetched whole
        for h in hits:
            cid = h["chunk_id"]
            i = snap.row_of.get(cid, -1)
            if i < 0:
                if cid not in fetched:
                    continue
                held[len(ids)] = fetched[cid]
            ids.append(cid if i < 0 else i)
            scores.append(float(h["_score"]))
            rows.append(i)
        return Ranked(ids, np.asarray(scores, dtype=np.float64), np.asarray(rows, dtype=np.int64), held), None

    def _rerank(self, query: str, order: np.ndarray, scores: np.ndarray, rows: Rows, depth: int) -> tuple[np.ndarray, np.ndarray]:
        head = order[:depth]
        scores = scores.copy()
        scores[head] = [float(s) for s in self.reranker.score(query, [rows.value(i, "text") for i in head.tolist()])]
        return np.concatenate([head[np.argsort(-scores[head], kind="stable")], order[depth:]]), scores

    def _serve_current(self, result: RetrievalResult, pool: Pool, order: np.ndarray, scores: np.ndarray, rows: Rows) -> None:
        if self.reranker is not None and len(order):
            order, scores = self._rerank(result.query, order, scores, rows, max(result.k * 3, 30))
            result.reranked = True
        # Look at a bounded prefix: a few superseded rows may be skipped, not thousands. SQL is
        # asked about the first k first (all current, as nearly always: one short query), and
        # about the rest of the prefix only when some of them were superseded.
        prefix = order[: max(result.k * 3, result.k + 20)].tolist()
        for part in (prefix[: result.k], prefix[result.k :]):
            versions = [rows.value(i, "version_id") for i in part]
            current = self._current_hashes(versions)
            for i, version_id in zip(part, versions):
                if version_id not in current:
                    result.dropped_superseded += 1
                    continue
                row = rows.row(i)  # only served rows become dicts
                hit = hit_from(row, pool.candidate(i, row["chunk_id"], scores[i]))
                hit.content_hash = current[version_id]
                result.results.append(hit)
                if len(result.results) == result.k:
                    return

    def _current_hashes(self, version_ids: list[str]) -> dict[str, str]:
        """Which of ``version_ids`` are their documents' current versions, with their content hashes."""
        if not version_ids:
            return {}
        # Core, not the ORM: this runs on every request, and an ORM session and result cost
        # ~2 ms of CPU here against ~0.5 ms for the same statement (cached compiled).
        with self.store.engine.connect() as conn:
            return dict(conn.execute(_CURRENT_VERSIONS, {"ids": list(set(version_ids))}).all())

    # -- user state ----------------------------------------------------------------------

    def _check_user(self, user_id: str, when: datetime | None) -> None:
        if not user_id.strip() or len(user_id) > 200:
            raise InvalidRequest("user_id must be 1-200 characters")
        with self.store.session() as session:
            user = session.get(UserRecord, user_id)
            if user is None:
                raise UnknownUser(f"unknown user {user_id!r}")
            if when is None and user.current_version_id is None:
                raise UnknownUser(f"user {user_id!r} has no current state (their snapshot was removed)")

    def _user_state(self, result: RetrievalResult, user_id: str, vector: np.ndarray, when: datetime | None) -> None:
        with self.store.session() as session:
            if when is None:
                user = session.get(UserRecord, user_id)
                snapshot = session.get(UserSnapshotVersion, user.current_version_id) if user and user.current_version_id else None
            else:
                snapshot = user_snapshot_at(session, user_id, when)
            if snapshot is None:
                raise UnknownUser(f"no state for user {user_id!r}" + (f" at {when.isoformat()}" if when else ""))
            result.user_id = user_id
            result.user_version_id = snapshot.version_id
            result.user_captured_at = snapshot.captured_at
            if when is not None:
                result.user_state = facts_at(session, self.embedder, snapshot, vector)
                return
        index = self.index
        # The user filter is part of the LanceDB query, never applied afterwards; every fact of
        # the snapshot is returned (state is small), ordered by similarity to the question.
        facts = index.rows(
            index.user_table_name, f"user_id = {quote(user_id)} AND version_id = {quote(snapshot.version_id)}",
            columns=["fact_key", "text", "user_id", "version_id", "vector"], limit=1000,
        )
        scored = [
            UserFact(key=f["fact_key"], text=f["text"], score=float(np.asarray(f["vector"], dtype=np.float32) @ vector))
            for f in facts
        ]
        result.user_state = sorted(scored, key=lambda f: -f.score)



def retrieve(
    store: ContextStore,
    embedder: Embedder,
    query: str,
    *,
    user_id: str | None = None,
    k: int = 5,
    as_of: str | datetime | None = None,
    filters: Mapping[str, Any] | None = None,
    mode: str | None = None,
) -> RetrievalResult:
    """One request without a long-lived ``Retriever`` (the CLI's ``query``): searches LanceDB directly."""
    return Retriever(store, embedder).retrieve(query, user_id=user_id, k=k, as_of=as_of, filters=filters, mode=mode)
