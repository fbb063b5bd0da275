"""An in-memory copy of the current company vectors, kept in step with the LanceDB table.

LanceDB's flat search over 100k x 384 vectors took ~238 ms on this machine; a numpy
matrix product over the same vectors ~15-20 ms (memory-bound: 154 MB read per query). The
matrix is a *snapshot of one table version*: on each search the table version is looked
up (at most every ``refresh_interval`` seconds) and a newer version is loaded and swapped
in whole, so a search sees one version or the next, never a mixture. Superseded rows are
additionally dropped by the SQL check in ``retrieval`` — the matrix is a cache, SQL says
what is current.

Large tables (``ann``: ``auto`` from ``ann_min_rows``) are searched in two stages: every
row is scored on a PCA projection of the vectors (96 of 384 dimensions: a quarter of the
memory to read), and the best ``pool`` rows are then scored exactly and ranked. Concurrent
searches share one pass of the first stage (``context_store.index.embed.coalesce``). Measured
at 100k rows side by side: 8.1 ms against 22.5 ms exact, recall@10 0.988; an inverted-file
index probing 30 % of 316 clusters reached recall 0.98 but cost 19.6 ms (many small
products). Recall against exact search is measured by ``bench/latency.py``
(``recall_vs_exact``), never assumed.

On CUDA (``device``, from ``embedding.device``) the snapshot's vectors are also copied to the
GPU and every unmasked search is exact there: one matrix product and a top-k per batch of
concurrent queries (0.24 ms at 100k x 384 on an H200, against 1.4 ms for numpy on 16
cores), so no projection is fitted. It ranks as numpy's exact search does, up to float
rounding and the order of tied scores. Masked searches and ``scores_for`` stay on the CPU copy.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from context_store.index.embed.coalesce import Coalescer
from context_store.index.embed.device import is_cuda
from context_store.retrieve.first_stage import ProjectedTopK
from context_store.retrieve.pool import codes
from context_store.retrieve.text_index import TermIndex, top_positive
from context_store.settings import RetrievalConfig
from context_store.store.vector_index import VectorIndex

__all__ = ["DenseIndex", "Snapshot", "torch_top"]

log = logging.getLogger(__name__)

META_COLUMNS = [
    "chunk_id", "doc_id", "version_id", "chunk_hash", "ordinal", "kind", "title", "heading", "text",
    "source_path", "source_changed_at", "indexed_at",
]


@dataclass
class Snapshot:
    """One table version: vectors (n, dim) row-normalised, and the row metadata by column."""

    version: int | None
    vectors: np.ndarray
    meta: dict[str, list[Any]]
    row_of: dict[str, int]
    loaded_at: float = field(default_factory=time.time)
    # two-stage search (None = exact): the first stage scores rows on vectors @ ``projection``
    projection: np.ndarray | None = None
    first_stage: ProjectedTopK | None = None
    text: TermIndex | None = None  # BM25 over the same rows (``text_index``), when asked for
    headings: TermIndex | None = None  # BM25 over each row's title and heading trail, beside ``text``
    gpu: Any = None  # on CUDA: ``vectors`` as a torch tensor on the GPU
    doc_codes: np.ndarray | None = None  # one int64 code per document (``pool.codes``): fusion groups by it

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def row(self, i: int) -> dict[str, Any]:
        return {c: self.meta[c][i] for c in META_COLUMNS}

    def text_mass(self, query: str, *, heading_weight: float = 0.0) -> float | None:
        """The most ``query`` could score in ``text_scores`` (``TermIndex.query_mass`` of both
        fields); None when this snapshot keeps no text index."""
        if self.text is None:
            return None
        mass = self.text.query_mass(query)
        if heading_weight and self.headings is not None:
            mass += heading_weight * self.headings.query_mass(query)
        return mass


class DenseIndex:
    """Exact or two-stage (projected) search over a snapshot of ``company_chunks``; thread-safe, lazily loaded."""

    def __init__(
        self,
        index: VectorIndex,
        *,
        ann: str = "auto",
        ann_min_rows: int = 50_000,
        dims: int = 96,
        pool: int = 200,
        refresh_interval: float = 0.2,
        text_index: bool = False,
        reload_wait: float = 0.5,
        device: str = "cpu",
    ) -> None:
        if ann == "ivf":  # the name of the former in-memory ANN in older configs
            ann = "projected"
        if ann not in ("auto", "exact", "projected"):
            raise ValueError(f"ann {ann!r} is not one of auto, exact, projected")
        self.index = index
        self.ann = ann
        self.ann_min_rows = ann_min_rows
        self.dims = dims
        self.pool = pool
        self.refresh_interval = refresh_interval
        self.text_index = text_index
        self.reload_wait = reload_wait
        self._loader: threading.Thread | None = None
        self._snapshot: Snapshot | None = None
        self._checked_at = 0.0
        self._versions: dict[str, int | None] = {}
        self._lock = threading.Lock()
        self.reloads = 0
        self.device = device  # resolved (cpu | cuda | cuda:N): ``embedding.device`` through ``resolve_device``
        self._first_stage = Coalescer(self._pools, max_batch=16)
        self._gpu_search = Coalescer(_gpu_tops, max_batch=16)

    @classmethod
    def from_config(cls, index: VectorIndex, config: RetrievalConfig, **overrides: Any) -> "DenseIndex":
        """The dense index a ``Retriever`` with ``config`` serves from (evaluations pass ``ann="exact"``)."""
        options: dict[str, Any] = {
            "ann": config.ann, "ann_min_rows": config.ann_min_rows, "dims": config.ann_dims, "pool": config.ann_pool,
            "refresh_interval": config.refresh_interval_seconds, "text_index": config.text_ranker == "memory",
        }
        return cls(index, **{**options, **overrides})

    # -- keeping in step -----------------------------------------------------------------

    def table_version(self) -> int | None:
        table = self.index.table(self.index.company_table_name)
        return None if table is None else int(table.version)

    def table_versions(self) -> dict[str, int | None]:
        """Both tables' versions as of the last check (at most ``refresh_interval`` old), the
        company table's being the snapshot's: what a request read, without asking LanceDB."""
        snap = self.snapshot()
        return {**self._versions, self.index.company_table_name: snap.version}

    def snapshot(self) -> Snapshot:
        """The current snapshot. A newer table version is loaded in a background thread while
        the previous snapshot keeps serving (at 100k rows a load takes seconds; requests must
        not queue behind it); the request that noticed waits up to ``reload_wait`` seconds for
        it, which a small table's load fits in. The first load is always waited for.

        One request at a time looks for a newer version (a LanceDB round trip per table,
        milliseconds under load); requests arriving meanwhile serve the snapshot they have
        instead of queueing behind the look."""
        now = time.monotonic()
        snap = self._snapshot
        if snap is not None and now - self._checked_at < self.refresh_interval:
            return snap
        if not self._lock.acquire(blocking=snap is None):
            return snap  # type: ignore[return-value]  # another request is looking
        loader = None
        try:
            snap = self._snapshot
            if snap is not None and time.monotonic() - self._checked_at < self.refresh_interval:
                return snap
            self._versions = self.index.versions()
            version = self._versions.get(self.index.company_table_name)
            self._checked_at = time.monotonic()
            if snap is None:
                snap = self._snapshot = self._load(version, previous=None)
                self.reloads += 1
                return snap
            if snap.version != version and self._loader is None:
                loader = self._loader = threading.Thread(target=self._reload, args=(version, snap), name="dense-index-reload", daemon=True)
                loader.start()
        finally:
            self._lock.release()
        if loader is not None:
            loader.join(self.reload_wait)
        return self._snapshot or snap

    def refresh(self, timeout: float) -> bool:
        """Serve the table's newest version from now on, loading it at once; False if not done within ``timeout``.

        What a caller that just committed rows waits on before it says they are retrievable
        (a staff answer posted with ``?wait=true``): a search after this returns True sees
        them — dense and in-memory full-text alike — with no refresh interval or background
        load in between. A load still running at the timeout finishes in the background.
        """
        deadline = time.monotonic() + timeout
        self.index.refresh()  # the cached handle moves on too, so the periodic look never goes back
        target = self.table_version()
        started: threading.Thread | None = None
        while True:
            with self._lock:
                snap = self._snapshot
                if snap is not None and _holds(snap.version, target):
                    self._checked_at = time.monotonic()
                    return True
                if started is not None and self._loader is None:
                    return False  # the load this call started failed (logged); the next look retries
                loader = self._loader
                if loader is None:
                    loader = started = self._loader = threading.Thread(
                        target=self._reload, args=(target, snap), name="dense-index-refresh", daemon=True
                    )
                    loader.start()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            loader.join(left)

    def _reload(self, version: int | None, previous: Snapshot | None) -> None:
        try:
            snap = self._load(version, previous=previous)
        except Exception:  # a failed load must not take serving down: the old snapshot stays, the next check retries
            log.exception("dense index: loading table version %s failed; still serving version %s", version,
                          previous.version if previous else None)
            snap = None
        with self._lock:
            if snap is not None:
                self._snapshot = snap  # one reference swap: readers hold whichever they started with
                self.reloads += 1
            self._loader = None

    def _load(self, version: int | None, previous: Snapshot | None) -> Snapshot:
        started = time.perf_counter()
        table = self.index.open_table(self.index.company_table_name)  # own handle: checkout pins it
        if table is None:
            return Snapshot(version=None, vectors=np.zeros((0, 1), dtype=np.float32), meta={c: [] for c in META_COLUMNS}, row_of={})
        if version is not None:
            table.checkout(version)  # read exactly the version we compared against
        arrow = table.to_arrow().select([*META_COLUMNS, "vector"])
        n = arrow.num_rows
        if n:
            flat = arrow.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            vectors = np.array(flat.reshape(n, -1), dtype=np.float32, copy=True)
        else:
            vectors = np.zeros((0, 1), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True) if n else None
        if n:
            vectors /= np.where(norms == 0, 1.0, norms)
        meta = {c: arrow.column(c).to_pylist() for c in META_COLUMNS}
        snap = Snapshot(version=version, vectors=vectors, meta=meta, row_of={cid: i for i, cid in enumerate(meta["chunk_id"])},
                        doc_codes=codes(meta["doc_id"]))
        if is_cuda(self.device) and n:
            import torch

            snap.gpu = torch.from_numpy(vectors).to(self.device)
        elif self.ann == "projected" or (self.ann == "auto" and n >= self.ann_min_rows):
            reuse = previous.projection if previous is not None else None
            if reuse is not None and (reuse.shape[0] != vectors.shape[1] or n > 2 * previous.size):
                reuse = None  # the corpus changed shape: fit again
            _project(snap, reuse, self.dims)
        if self.text_index:
            snap.text = TermIndex(meta["text"], meta["chunk_hash"], previous=previous.text if previous is not None else None)
            snap.headings = TermIndex(meta["heading"], meta["heading"], previous=previous.headings if previous is not None else None)
        log.info("dense index: loaded %d rows of version %s in %.2fs (%s)", n, version, time.perf_counter() - started,
                 "projected" if snap.projection is not None else f"exact on {self.device}")
        return snap

    # -- search --------------------------------------------------------------------------

    def search(
        self, vector: np.ndarray, k: int, *, mask: np.ndarray | None = None, exact: bool = False, snap: Snapshot | None = None
    ) -> tuple[Snapshot, np.ndarray, np.ndarray]:
        """Top ``k`` rows by cosine: (snapshot, row indices, scores), best first.

        ``mask`` (bool per row) restricts the search; masked searches are always exact so a
        rare filter cannot be starved by the clusters probed. ``snap``: search this snapshot
        (one a request already holds), not the current one.
        """
        snap = snap if snap is not None else self.snapshot()
        if snap.size == 0 or k <= 0:
            return snap, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = np.asarray(vector, dtype=np.float32)
        if mask is not None:
            rows = np.flatnonzero(mask)
            scores = snap.vectors[rows] @ q
            return snap, *_top(rows, scores, k)
        if snap.gpu is not None:
            return snap, *self._gpu_search((snap, q, k))
        if snap.projection is None or exact:
            scores = snap.vectors @ q
            return snap, *_top(np.arange(snap.size), scores, k)
        pool = min(snap.size, max(self.pool, 2 * k))
        rows = self._first_stage((snap, q, pool))
        return snap, *_top(rows, snap.vectors[rows] @ q, k)

    @staticmethod
    def _pools(items: list[tuple[Snapshot, np.ndarray, int]]) -> list[np.ndarray]:
        """First stage for concurrent searches: one pass over each snapshot's projected rows
        scores every query in the batch (``first_stage``: ~2.4 ms for four queries at 100k rows)."""
        out: list[np.ndarray | None] = [None] * len(items)
        by_snap: dict[int, list[int]] = {}
        for i, (snap, _, _) in enumerate(items):
            by_snap.setdefault(id(snap), []).append(i)
        for members in by_snap.values():
            snap = items[members[0]][0]
            assert snap.first_stage is not None
            # The largest pool asked for serves all: more rows scored exactly can only help the others.
            rows = snap.first_stage.top(np.stack([items[i][1] for i in members]), max(items[i][2] for i in members))
            for row, i in zip(rows, members):
                out[i] = row
        return out  # type: ignore[return-value]

    def text_scores(self, query: str, *, heading_weight: float = 0.0, snap: Snapshot | None = None) -> tuple[Snapshot, np.ndarray] | None:
        """BM25 of every snapshot row (of ``snap``, else the current one), plus ``heading_weight`` x BM25
        of its title and heading trail (the heading field); None when this index keeps no text index."""
        snap = snap if snap is not None else self.snapshot()
        if snap.text is None:
            return None
        scores = snap.text.scores(query)
        if heading_weight and snap.headings is not None:
            headings = snap.headings.scores(query)
            headings *= np.float32(heading_weight)  # in place: no third 100k-row array per request
            scores += headings
        return snap, scores

    def text_search(
        self, query: str, k: int, *, mask: np.ndarray | None = None, heading_weight: float = 0.0
    ) -> tuple[Snapshot, np.ndarray, np.ndarray] | None:
        """BM25 top ``k`` over the snapshot's rows (``text_scores``), or None when this index keeps no text index."""
        found = self.text_scores(query, heading_weight=heading_weight)
        if found is None:
            return None
        snap, scores = found
        rows, top = top_positive(scores, k, mask=mask)
        return snap, rows, top

    def scores_for(self, snap: Snapshot, vector: np.ndarray, rows: list[int]) -> np.ndarray:
        return snap.vectors[np.asarray(rows, dtype=np.int64)] @ np.asarray(vector, dtype=np.float32)


def _gpu_tops(items: list[tuple[Snapshot, np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact search for concurrent queries on the GPU: one product and one top-k per snapshot."""
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(items)
    by_snap: dict[int, list[int]] = {}
    for i, (snap, _, _) in enumerate(items):
        by_snap.setdefault(id(snap), []).append(i)
    for members in by_snap.values():
        snap = items[members[0]][0]
        tops = torch_top(snap.gpu, np.stack([items[i][1] for i in members]), max(items[i][2] for i in members))
        for i, (rows, scores) in zip(members, tops):
            k = items[i][2]
            out[i] = (rows[:k], scores[:k])
    return out  # type: ignore[return-value]


def torch_top(matrix: Any, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, the top ``k`` rows of ``matrix`` (a torch tensor, any device) by dot product,
    best first: (row indices, scores) as numpy. The GPU search's arithmetic; tested on the CPU."""
    import torch

    with torch.inference_mode():
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(matrix.device)
        scores, rows = torch.topk(matrix @ q.T, min(k, matrix.shape[0]), dim=0)  # (k, queries), sorted
        scores, rows = scores.T.cpu().numpy(), rows.T.cpu().numpy()
    return [(rows[j].astype(np.int64), scores[j]) for j in range(len(queries))]


def _holds(version: int | None, target: int | None) -> bool:
    """Whether a snapshot of table ``version`` holds every row of ``target``."""
    return version == target if version is None or target is None else version >= target


def _top(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if scores.shape[0] > k:
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(scores.shape[0])
    order = part[np.argsort(-scores[part], kind="stable")]
    return rows[order], scores[order]


def _project(snap: Snapshot, projection: np.ndarray | None, dims: int, *, sample: int = 20_000, seed: int = 0) -> None:
    """PCA of the (normalised) vectors, from a sample; rows are stored projected for the first stage."""
    vectors = snap.vectors
    dims = min(dims, vectors.shape[1])
    if projection is None or projection.shape[1] != dims:
        rng = np.random.default_rng(seed)
        rows = vectors if vectors.shape[0] <= sample else vectors[rng.choice(vectors.shape[0], size=sample, replace=False)]
        _, basis = np.linalg.eigh(np.cov(rows, rowvar=False))
        projection = np.ascontiguousarray(basis[:, ::-1][:, :dims], dtype=np.float32)  # largest variance first
    snap.projection = projection
    snap.first_stage = ProjectedTopK(projection, projection.T @ vectors.T)
