"""Report the warm path's updates to the Dagster instance, so the asset catalog shows every update."""

from __future__ import annotations

import os
from collections.abc import Callable

from context_store.index import ApplyResult

__all__ = ["dagster_reporter"]


def dagster_reporter() -> Callable[[ApplyResult], None] | None:
    """Report the warm path's updates to the Dagster instance (``DAGSTER_HOME``) as runless
    materializations, so the asset catalog shows every update, not only Dagster's own runs."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    import dagster as dg

    instance = dg.DagsterInstance.get()

    def report(result: ApplyResult) -> None:
        for kind, sync, index, assets in (
            ("company", result.company, result.company_index, ("company_documents", "company_chunk_index")),
            ("user", result.users, result.user_index, ("user_snapshots", "user_state_index")),
        ):
            if sync is None or index is None or not (index.items_indexed or index.items_removed):
                continue
            meta = {
                "trigger": "watch (warm path)",
                "changed": getattr(sync, "changed", 0),
                "new": getattr(sync, "new", 0),
                "deleted": getattr(sync, "deleted", 0),
                "items_indexed": index.items_indexed,
                "chunks_embedded": index.chunks_embedded,
                "dagster/row_count": index.rows_in_table,
            }
            for asset in assets:
                instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, metadata=meta))

    return report
