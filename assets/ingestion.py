"""Company state and user state as two separate lineages: sources → versions → LanceDB."""


import time

import dagster as dg

from assets.metadata import md_table, skipped_table
from assets.resources import EmbedderResource, StoreResource
from context_store.index import index_drift, index_state, sync_state
from context_store.settings import DEFAULT_MODEL, ChunkingConfig
from context_store.store import COMPANY_TABLE, USER_TABLE

__all__ = [
    "INDEX_CODE_VERSION",
    "SyncConfig",
    "company_chunk_index",
    "company_documents",
    "company_index_matches_store",
    "user_snapshots",
    "user_state_index",
    "user_index_matches_store",
]

# A new chunker or default model changes this, and Dagster then marks the index stale.
INDEX_CODE_VERSION = f"{ChunkingConfig().fingerprint()}|{DEFAULT_MODEL}|rows-v1"


class SyncConfig(dg.Config):
    """Empty ``paths`` re-hashes every source; otherwise only these files are examined."""

    paths: list[str] = []


def _progress_factory(store_resource: StoreResource):  # type: ignore[no-untyped-def]
    if not store_resource.show_progress:
        return None
    from tqdm import tqdm

    def start(total_documents: int):  # type: ignore[no-untyped-def]
        bar = tqdm(total=total_documents, unit="doc", desc="chunk + embed + index", leave=False)
        return bar.update

    return start


@dg.asset(group_name="company_state", kinds={"python", "sqlite"})
def company_documents(context: dg.AssetExecutionContext, config: SyncConfig, store: StoreResource) -> dg.MaterializeResult:
    """Versions of every help article, policy and staff answer; deletions become tombstones."""
    cs = store.open()
    report = sync_state(cs, "company", paths=config.paths or None, trigger=store.trigger)
    for error in report.source_errors:
        context.log.error(error)
    return dg.MaterializeResult(
        metadata={
            "documents_seen": report.seen,
            "new": report.new,
            "changed": report.changed,
            "unchanged": report.unchanged,
            "deleted": report.deleted,
            "renamed": report.renamed,
            "skipped": report.skipped,
            "source_errors": len(report.source_errors),
            "skipped_inputs": skipped_table(report.skipped_inputs),
            "scope": "paths: " + ", ".join(config.paths) if config.paths else "full scan",
        }
    )


@dg.asset(
    deps=[company_documents], group_name="company_state", code_version=INDEX_CODE_VERSION, kinds={"lancedb"}
)
def company_chunk_index(store: StoreResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    """The ``company_chunks`` LanceDB table: current chunks only, re-embedding only new text."""
    cs = store.open()
    started = time.perf_counter()
    report = index_state(cs, embedder.for_store(cs), "company", trigger=store.trigger, progress=_progress_factory(store))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": report.rows_in_table,
            "documents_indexed": report.items_indexed,
            "documents_removed": report.items_removed,
            "chunks_embedded": report.chunks_embedded,
            "chunks_reused": report.chunks_reused,
            "lancedb_commits": report.lancedb_commits,
            "duration_s": round(time.perf_counter() - started, 3),
            "model": embedder.for_store(cs).name,
            "table_version": cs.index.versions().get(cs.index.company_table_name) or 0,
        }
    )


@dg.asset(group_name="user_state", kinds={"python", "sqlite"})
def user_snapshots(context: dg.AssetExecutionContext, config: SyncConfig, store: StoreResource) -> dg.MaterializeResult:
    """Per-user snapshots (account, orders, tickets, promises), each user versioned on its own."""
    cs = store.open()
    report = sync_state(cs, "user", paths=config.paths or None, trigger=store.trigger)
    for error in report.source_errors:
        context.log.error(error)
    return dg.MaterializeResult(
        metadata={
            "files_seen": report.files_seen,
            "users_seen": report.users_seen,
            "new": report.new,
            "changed": report.changed,
            "unchanged": report.unchanged,
            "deleted": report.deleted,
            "skipped": report.skipped,
            "source_errors": len(report.source_errors),
            "skipped_inputs": skipped_table(report.skipped_inputs),
        }
    )


@dg.asset(deps=[user_snapshots], group_name="user_state", code_version=INDEX_CODE_VERSION, kinds={"lancedb"})
def user_state_index(store: StoreResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    """The ``user_state`` LanceDB table: each user's current facts, filtered by user at query time."""
    cs = store.open()
    started = time.perf_counter()
    report = index_state(cs, embedder.for_store(cs), "user", trigger=store.trigger)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": report.rows_in_table,
            "users_indexed": report.items_indexed,
            "users_removed": report.items_removed,
            "facts_embedded": report.chunks_embedded,
            "facts_reused": report.chunks_reused,
            "duration_s": round(time.perf_counter() - started, 3),
        }
    )


def _drift_check(store: StoreResource, table: str) -> dg.AssetCheckResult:
    drift = next(d for d in index_drift(store.open()) if d.table == table)
    unexplained = set(drift.unexplained)
    sample = [[cid, "missing from LanceDB"] for cid in drift.missing if cid in unexplained][:10] + [
        [cid, "in LanceDB but not current"] for cid in drift.extra if cid in unexplained
    ][:10]
    # This run indexed everything pending when it ran. A document pending now was changed
    # by another writer since (a serving replica's staff answer, a concurrent ingest) and is
    # that writer's work in progress: it is reported, and only drift elsewhere fails the check.
    return dg.AssetCheckResult(
        passed=not unexplained,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "expected_rows": drift.expected,
            "rows_in_lancedb": drift.actual,
            "missing": len(drift.missing),
            "extra": len(drift.extra),
            "unexplained": len(unexplained),
            "pending_documents": len(drift.pending),
            "sample": md_table(["id", "problem"], sample) if sample else dg.MetadataValue.md(
                f"_in sync; {len(drift.pending)} document(s) pending with another writer_" if drift.pending else "_in sync_"
            ),
        },
    )


@dg.asset_check(asset=company_chunk_index, name="index_matches_store", blocking=True)
def company_index_matches_store(store: StoreResource) -> dg.AssetCheckResult:
    """Every chunk SQL records as indexed is in LanceDB, and LanceDB holds nothing else (pending documents reported)."""
    return _drift_check(store, COMPANY_TABLE)


@dg.asset_check(asset=user_state_index, name="index_matches_store", blocking=True)
def user_index_matches_store(store: StoreResource) -> dg.AssetCheckResult:
    """Every current user fact is in LanceDB and LanceDB holds nothing else."""
    return _drift_check(store, USER_TABLE)
