"""LanceDB tables ``company_chunks`` and ``user_state``: a projection of the SQL store.

Every write replaces the complete row set of a group of documents (or users) in one
``merge_insert`` commit, so a reader sees either the old rows of a document or the new
ones, never both and never neither.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS
from lancedb.query import MatchQuery

__all__ = ["COMPANY_TABLE", "USER_TABLE", "VectorIndex", "company_schema", "quote", "user_schema"]

log = logging.getLogger(__name__)

COMPANY_TABLE = "company_chunks"
USER_TABLE = "user_state"
_TS = pa.timestamp("us", tz="UTC")
T = TypeVar("T")


def company_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("chunk_id", pa.string()),
            ("doc_id", pa.string()),
            ("version_id", pa.string()),
            ("chunk_hash", pa.string()),
            ("ordinal", pa.int32()),
            ("kind", pa.string()),
            ("title", pa.string()),
            ("heading", pa.string()),
            ("text", pa.string()),
            ("source_path", pa.string()),
            ("source_changed_at", _TS),
            ("indexed_at", _TS),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def user_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("fact_id", pa.string()),
            ("user_id", pa.string()),
            ("version_id", pa.string()),
            ("fact_key", pa.string()),
            ("text", pa.string()),
            ("captured_at", _TS),
            ("indexed_at", _TS),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def quote(value: str) -> str:
    """A SQL string literal for LanceDB filters."""
    return "'" + value.replace("'", "''") + "'"


def _in_list(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(quote(v) for v in values)})"


class VectorIndex:
    """Both LanceDB tables of one deployment. Cheap to construct; connects lazily.

    Writers open a table afresh for every operation, so they always see the newest version.
    A long-lived reader (the API) uses ``reader()``: table handles are opened once and LanceDB
    itself looks for a newer version at most every ``read_consistency_interval`` seconds —
    opening a table costs ~2 ms and checking its version ~1.5 ms, per call, otherwise.
    """

    def __init__(
        self,
        uri: str,
        *,
        company_table: str = COMPANY_TABLE,
        user_table: str = USER_TABLE,
        storage_options: dict[str, str] | None = None,
        read_consistency_interval: float | None = None,
    ) -> None:
        self.uri = uri
        self.company_table_name = company_table
        self.user_table_name = user_table
        self.storage_options = storage_options or None
        self.read_consistency_interval = read_consistency_interval
        self._db: Any = None
        self._handles: dict[str, Any] = {}
        self._with_fts: set[str] = set()
        self._versions: tuple[float, dict[str, int | None]] | None = None

    def reader(self, read_consistency_interval: float) -> "VectorIndex":
        """A view of the same tables for a long-lived reader: cached handles, refreshed by LanceDB."""
        return VectorIndex(
            self.uri, company_table=self.company_table_name, user_table=self.user_table_name,
            storage_options=self.storage_options, read_consistency_interval=max(0.0, read_consistency_interval),
        )

    def refresh(self) -> None:
        """A reader's cached handles look at the newest table versions now, not after their interval."""
        for handle in list(self._handles.values()):
            handle.checkout_latest()
        self._versions = None

    @property
    def db(self) -> Any:
        if self._db is None:
            interval = self.read_consistency_interval
            self._db = lancedb.connect(
                self.uri, storage_options=self.storage_options,
                read_consistency_interval=None if interval is None else timedelta(seconds=interval),
            )
        return self._db

    def table(self, name: str) -> Any | None:
        """The table (None if it does not exist yet): a fresh handle, or the reader's cached one."""
        if self.read_consistency_interval is not None:
            handle = self._handles.get(name)
            if handle is None:
                handle = self.open_table(name)
                if handle is not None:
                    self._handles[name] = handle
            return handle
        return self.open_table(name)

    def open_table(self, name: str) -> Any | None:
        """Always a new handle (to ``checkout`` a version without pinning the shared one)."""
        try:
            return self.db.open_table(name)
        except (FileNotFoundError, ValueError):
            return None

    def _table_for_write(self, name: str, schema: pa.Schema) -> Any:
        table = self.table(name)
        if table is None:
            # two first writers may race to create it; exist_ok makes the loser open it instead
            table = _retry_conflicts(lambda: self.db.create_table(name, schema=schema, exist_ok=True))
        return table

    # -- writes --------------------------------------------------------------------------

    def replace_documents(self, doc_ids: Sequence[str], rows: list[dict[str, Any]], dim: int) -> None:
        """Make the rows of ``doc_ids`` exactly ``rows`` in one commit (empty rows = delete)."""
        self._replace(self.company_table_name, company_schema(dim), "chunk_id", "doc_id", doc_ids, rows)

    def replace_users(self, user_ids: Sequence[str], rows: list[dict[str, Any]], dim: int) -> None:
        self._replace(self.user_table_name, user_schema(dim), "fact_id", "user_id", user_ids, rows)

    def _replace(
        self, name: str, schema: pa.Schema, key: str, group: str, group_ids: Sequence[str], rows: list[dict[str, Any]]
    ) -> None:
        if not group_ids:
            return
        table = self.table(name)
        if table is None:
            if not rows:
                return  # nothing stored, nothing to delete
            table = self._table_for_write(name, schema)
        data = _to_arrow(rows, table.schema)
        if table.count_rows() == 0:
            # Nothing stored yet (a first ingest): a plain append is the same single commit
            # without the merge join, and the full-text index is built once afterwards.
            _retry_conflicts(lambda: table.add(data))
            self._ensure_fts(table)
            return
        condition = _in_list(group, group_ids)

        def commit() -> None:
            (
                table.merge_insert(key)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(condition)
                .execute(data)
            )

        _retry_conflicts(commit, on_retry=table.checkout_latest)
        self._ensure_fts(table)

    def _ensure_fts(self, table: Any) -> None:
        if table.count_rows() and not self._has_fts(table):
            # two first writers may both build it; the loser looks again at the newest version
            _retry_conflicts(
                lambda: self._has_fts(table) or table.create_index("text", config=FTS(), replace=True),
                on_retry=table.checkout_latest,
            )

    def _has_fts(self, table: Any) -> bool:
        if table.name in self._with_fts:  # an FTS index is never dropped once built
            return True
        found = any(ix.index_type == "FTS" for ix in table.list_indices())
        if found and self.read_consistency_interval is not None:
            self._with_fts.add(table.name)
        return found

    def optimize(self, *, cleanup_older_than: Any = None) -> bool:
        """Compact fragments and fold new rows into the full-text index.

        Maintenance, not data: when another process keeps compacting the same fragments
        (two ingests finishing together), we give up after a few tries with a warning
        rather than fail the ingest; the next run compacts what is left. False then.
        """
        done = True
        for name in (self.company_table_name, self.user_table_name):
            table = self.table(name)
            if table is None:
                continue
            try:
                _retry_conflicts(lambda: table.optimize(cleanup_older_than=cleanup_older_than), attempts=4, on_retry=table.checkout_latest)
            except Exception as exc:
                if not _is_conflict(exc):
                    raise
                log.warning("LanceDB %s: optimize lost to a concurrent writer (%s); the next run compacts", name, exc)
                done = False
        return done

    # -- reads ---------------------------------------------------------------------------

    def ids(self, name: str, key: str) -> set[str]:
        table = self.table(name)
        if table is None:
            return set()
        n = table.count_rows()
        if n == 0:
            return set()
        return set(table.search().select([key]).limit(n).to_arrow().column(key).to_pylist())

    def count(self, name: str) -> int:
        table = self.table(name)
        return 0 if table is None else table.count_rows()

    def versions(self) -> dict[str, int | None]:
        """Table versions; a reader answers from what it saw within its consistency interval
        (each version lookup is a round trip to LanceDB's runtime, ~1.5 ms, per table)."""
        cached = self._versions
        if cached is not None and self.read_consistency_interval is not None and time.monotonic() - cached[0] < self.read_consistency_interval:
            return dict(cached[1])
        out: dict[str, int | None] = {}
        for name in (self.company_table_name, self.user_table_name):
            table = self.table(name)
            out[name] = None if table is None else table.version
        self._versions = (time.monotonic(), out)
        return dict(out)

    def unindexed_fts_rows(self) -> int:
        table = self.table(self.company_table_name)
        if table is None:
            return 0
        for ix in table.list_indices():
            if ix.index_type == "FTS":
                return int(table.index_stats(ix.name).num_unindexed_rows)
        return table.count_rows()

    def vector_search(
        self, name: str, vector: np.ndarray, k: int, where: str | None = None, columns: list[str] | None = None
    ) -> list[dict[str, Any]]:
        table = self.table(name)
        if table is None or k <= 0:
            return []
        query = table.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector").metric("cosine")
        if where:
            query = query.where(where, prefilter=True)
        if columns:
            query = query.select([*columns, "_distance"])
        return query.limit(k).to_list()

    def text_search(
        self, name: str, text: str, k: int, where: str | None = None, columns: list[str] | None = None
    ) -> list[dict[str, Any]]:
        table = self.table(name)
        if table is None or k <= 0 or not text.strip() or not self._has_fts(table):
            return []
        # A plain string is parsed as query syntax: a question in double quotes becomes a phrase
        # query, which our position-less index refuses. A match query takes the words as words.
        query = table.search(MatchQuery(text, "text"))
        if where:
            query = query.where(where, prefilter=True)
        if columns:
            query = query.select([*columns, "_score"])
        return query.limit(k).to_list()

    def rows(self, name: str, where: str, columns: list[str] | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        table = self.table(name)
        if table is None:
            return []
        query = table.search().where(where)
        if columns:
            query = query.select(columns)
        return query.limit(limit).to_list()


def _is_conflict(exc: BaseException) -> bool:
    # lance raises plain RuntimeError/OSError for conflicts; the message is all we have.
    # "Too many concurrent writers/writes" is lance giving up on its own commit retries while
    # other writers keep winning (an ingest's waves and a replica's warm path on one table):
    # by then the contention may be over, so it is retried like a conflict.
    text = str(exc).lower()
    return "conflict" in text or "retryable" in text or "too many concurrent writ" in text


def _to_arrow(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Columnar build: vectors go in as one float32 buffer instead of a Python list per row."""
    columns = []
    for f in schema:
        if pa.types.is_fixed_size_list(f.type):
            flat = np.asarray([r[f.name] for r in rows], dtype=np.float32).reshape(-1) if rows else np.zeros(0, np.float32)
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), f.type.list_size))
        else:
            columns.append(pa.array([r[f.name] for r in rows], type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _retry_conflicts(fn: Callable[[], T], attempts: int = 8, on_retry: Callable[[], Any] | None = None) -> T:
    """Concurrent writers to one table can race on a commit; the loser retries with backoff.

    ``on_retry`` moves the table handle to the newest version first: retrying from the
    version that lost would only lose again.
    """
    delay = 0.05
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not _is_conflict(exc):
                raise
            log.warning("LanceDB commit conflict (attempt %d): %s; retrying", attempt + 1, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            if on_retry is not None:
                on_retry()
    raise AssertionError("unreachable")
