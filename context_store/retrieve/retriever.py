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
from context_store.retrieve.features import confidence_features
from context_store.retrieve.filters import check_filters, lance_where, row_mask
from context_store.retrieve.fusion import Candidate, fuse
from context_store.retrieve.fusion_model import FusionModel, load_fusion_model
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


class _Rows(dict):  # type: ignore[type-arg]
    """chunk id -> row. Snapshot rows become dicts only when read: of ~200 candidates a request
    reads a few dozen, and building every dict cost more than the dense search."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[str, tuple[Any, int]] = {}

    def put(self, cid: str, source: Any) -> None:
        if isinstance(source, tuple):
            self.refs[cid] = source
        else:
            self[cid] = source

    def __missing__(self, cid: str) -> dict[str, Any]:
        snap, i = self.refs[cid]  # an unknown id raises KeyError, as a dict would
        row = self[cid] = snap.row(i)
        return row

    def __contains__(self, cid: object) -> bool:
        return dict.__contains__(self, cid) or cid in self.refs

    def doc_id(self, cid: str) -> str:
        """The chunk's document, without building its row (a built row was read from the same meta)."""
        ref = self.refs.get(cid)
        return ref[0].meta["doc_id"][ref[1]] if ref is not None else self[cid]["doc_id"]

    def version_of(self, cid: str) -> str:
        """The chunk's version id, without building its row."""
        ref = self.refs.get(cid)
        return ref[0].meta["version_id"][ref[1]] if ref is not None else self[cid]["version_id"]


def _fill_text_scores(cands: dict[str, Candidate], rows: _Rows, snap: Any, full: np.ndarray) -> None:
    """BM25 for dense candidates below the text top ``n`` (learned fusion weighs every candidate's
    text evidence; the in-memory ranker has scored every row already)."""
    for cid, cand in cands.items():
        if cand.text_score is None and cid in snap.row_of:
            score = float(full[snap.row_of[cid]])
            if score > 0:
                cand.text_score = score


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
        vector = self.embedder.encode([query])[0]
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
        cands, rows, mass = self._candidates(result, vector, {}, max(depth, self.config.candidates))
        return cands, [rows.doc_id(c.key) for c in cands], mass

    # -- current state -------------------------------------------------------------------

    def _current(self, result: RetrievalResult, vector: np.ndarray, filters: dict[str, list[str]], *, candidates: int | None = None) -> None:
        cands, rows, mass = self._candidates(result, vector, filters, candidates or max(self.config.candidates, result.k * 2))
        docs = [rows.doc_id(c.key) for c in cands]
        fused = fuse(result.mode, cands, result.query, self.config, docs=docs, model=self.fusion, text_mass=mass)
        result.features = confidence_features(fused, rows, result.mode)
        self._serve_current(result, fused, rows)

    def _candidates(
        self, result: RetrievalResult, vector: np.ndarray, filters: dict[str, list[str]], n: int
    ) -> tuple[list[Candidate], _Rows, float | None]:
        """The dense and full-text top ``n`` as candidates; the rows they came from; the most the query
        could score on the text side (the in-memory ranker's ``query_mass``; None otherwise); the versions read."""
        rows = _Rows()
        cands: dict[str, Candidate] = {}
        index = self.index
        snap = None
        mass = None
        if result.mode != "text":
            snap = self._dense_hits(result, vector, filters, n, rows, cands)
        if result.mode != "vector":
            hits, full = self._text_hits(result.query, n, filters, snap)
            text_only: list[tuple[Candidate, Any]] = []
            for rank, (cid, score, vec, source) in enumerate(hits, 1):
                cand = cands.get(cid)
                if cand is None:
                    cand = cands[cid] = Candidate(cid)
                    rows.put(cid, source)
                cand.text_score, cand.text_rank = score, rank
                if cand.vector_score is None and result.mode != "text":
                    text_only.append((cand, vec))
            if text_only:  # score the text-only candidates on the dense side too (fusion needs both), in one product
                matrix = np.asarray([v for _, v in text_only], dtype=np.float32)
                norms = np.linalg.norm(matrix, axis=1)
                for (cand, _), cosine in zip(text_only, (matrix @ vector / np.where(norms == 0, 1.0, norms)).tolist()):
                    cand.vector_score = cosine
            if full is not None and result.mode == "hybrid":
                _fill_text_scores(cands, rows, *full)
                mass = full[0].text_mass(result.query, heading_weight=self.fusion.heading_weight)
        # What this request read; the dense index looked the versions up at most one refresh
        # interval ago, so no request waits for LanceDB's answer.
        result.table_versions = self.dense.table_versions() if self.dense is not None else index.versions()
        if snap is not None:
            result.table_versions[index.company_table_name] = snap.version
        return list(cands.values()), rows, mass

    def _dense_hits(
        self, result: RetrievalResult, vector: np.ndarray, filters: dict[str, list[str]], n: int, rows: _Rows, cands: dict[str, Candidate]
    ) -> Any:
        """Dense top ``n`` into ``cands``; the snapshot searched (None: LanceDB was)."""
        if self.dense is None:
            index = self.index
            for rank, row in enumerate(index.vector_search(index.company_table_name, vector, n, where=lance_where(filters)), 1):
                rows.put(row["chunk_id"], row)
                cands[row["chunk_id"]] = Candidate(row["chunk_id"], vector_score=1.0 - float(row.get("_distance", 1.0)), vector_rank=rank)
            return None
        mask = self._mask(filters) if filters else None
        snap, idx, scores = self.dense.search(vector, n, mask=mask)
        result.dense_snapshot_version = snap.version
        chunk_ids = snap.meta["chunk_id"]
        for rank, (i, s) in enumerate(zip(idx.tolist(), scores.tolist()), 1):
            cid = chunk_ids[i]
            rows.put(cid, (snap, i))
            cands[cid] = Candidate(cid, vector_score=float(s), vector_rank=rank)
        return snap

    def _text_hits(
        self, query: str, n: int, filters: dict[str, list[str]], snap: Any
    ) -> tuple[list[tuple[str, float, Any, Any]], tuple[Any, np.ndarray] | None]:
        """Full-text hits as (chunk id, score, vector, row or (snapshot, row number)), and the
        in-memory ranker's (snapshot, score of every row) when it answered.

        ``text_ranker: memory`` (with a dense snapshot): BM25 over the snapshot's own rows, the
        title and heading trail weighed as a field of their own (``text_index``, ~1-2 ms at 100k
        rows against ~12 ms for LanceDB's FTS). Otherwise LanceDB's FTS index; with a dense
        snapshot only ids come from LanceDB (measured at 100k rows: 15 ms for ids against 58 ms
        with text and vectors) and rows the snapshot does not hold yet (a newer table version)
        are fetched whole."""
        if self.dense is not None and self.config.text_ranker == "memory":
            found = self.dense.text_scores(query, heading_weight=self.fusion.heading_weight)
            if found is not None:
                tsnap, full = found
                idx, scores = top_positive(full, n, mask=self._mask(filters) if filters else None)
                ids = tsnap.meta["chunk_id"]
                return [(ids[i], float(s), tsnap.vectors[i], (tsnap, i)) for i, s in zip(idx.tolist(), scores.tolist())], (tsnap, full)
        index = self.index
        if snap is None:
            found_rows = index.text_search(index.company_table_name, query, n, where=lance_where(filters), columns=[*_ROW_COLUMNS, "vector"])
            return [(r["chunk_id"], float(r["_score"]), r["vector"], r) for r in found_rows], None
        hits = index.text_search(index.company_table_name, query, n, where=lance_where(filters), columns=["chunk_id"])
        missing = [h["chunk_id"] for h in hits if h["chunk_id"] not in snap.row_of]
        fetched = {}
        if missing:
            where = "chunk_id IN (" + ", ".join(quote(c) for c in missing) + ")"
            fetched = {r["chunk_id"]: r for r in index.rows(index.company_table_name, where, columns=[*_ROW_COLUMNS, "vector"])}
        out: list[tuple[str, float, Any, Any]] = []
        for h in hits:
            cid = h["chunk_id"]
            if cid in snap.row_of:
                i = snap.row_of[cid]
                out.append((cid, float(h["_score"]), snap.vectors[i], (snap, i)))
            elif cid in fetched:
                out.append((cid, float(h["_score"]), fetched[cid]["vector"], fetched[cid]))
        return out, None

    def _mask(self, filters: dict[str, list[str]]) -> np.ndarray:
        assert self.dense is not None
        snap = self.dense.snapshot()
        return row_mask(filters, snap.meta["kind"], snap.meta["doc_id"])

    def _rerank(self, query: str, fused: list[Candidate], rows: dict[str, dict[str, Any]], depth: int) -> list[Candidate]:
        head = fused[:depth]
        scores = self.reranker.score(query, [rows[c.key]["text"] for c in head])
        for c, s in zip(head, scores):
            c.score = float(s)
        return sorted(head, key=lambda c: -c.score) + fused[depth:]

    def _serve_current(self, result: RetrievalResult, fused: list[Candidate], rows: _Rows) -> None:
        if self.reranker is not None and fused:
            fused = self._rerank(result.query, fused, rows, max(result.k * 3, 30))
            result.reranked = True
        # Look at a bounded prefix: a few superseded rows may be skipped, not thousands.
        prefix = fused[: max(result.k * 3, result.k + 20)]
        version_ids = {rows.version_of(c.key) for c in prefix}
        current: dict[str, str] = {}
        if version_ids:
            # Core, not the ORM: this runs on every request, and an ORM session and result cost
            # ~2 ms of CPU here against ~0.5 ms for the same statement (cached compiled).
            with self.store.engine.connect() as conn:
                current = {vid: chash for vid, chash in conn.execute(_CURRENT_VERSIONS, {"ids": list(version_ids)})}
        for c in prefix:
            version_id = rows.version_of(c.key)
            if version_id not in current:
                result.dropped_superseded += 1
                continue
            hit = hit_from(rows[c.key], c)  # only served rows become dicts
            hit.content_hash = current[version_id]
            result.results.append(hit)
            if len(result.results) == result.k:
                break

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
