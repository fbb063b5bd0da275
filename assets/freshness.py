"""Freshness as Dagster sees it: the report asset and its checks, reconciliation, compaction."""

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import dagster as dg

from assets.ingestion import company_chunk_index, user_state_index
from assets.metadata import md_table
from assets.resources import StoreResource
from context_store.measure import FreshnessReport, evaluate_checks, reconciliation_diff
from context_store.measure import freshness_report as build_freshness_report
from context_store.state import mark_applied
from context_store.state import prune as prune_journal
from context_store.store import ContextStore

__all__ = [
    "FRESHNESS_AUTOMATION",
    "FRESHNESS_CHECKS",
    "CompactionConfig",
    "FreshnessConfig",
    "compact_lancedb",
    "freshness_report",
    "source_reconciliation",
]

# check name -> (severity, description)
FRESHNESS_CHECKS: dict[str, tuple[dg.AssetCheckSeverity, str]] = {
    "company_lag_p95_within_sla": (dg.AssetCheckSeverity.WARN, "Company lag p95 (source change → committed) is within the SLA."),
    "user_lag_p95_within_sla": (dg.AssetCheckSeverity.WARN, "User-state lag p95 is within the SLA."),
    "no_unindexed_change_older_than_sla": (dg.AssetCheckSeverity.WARN, "No change waits longer than the SLA to become retrievable."),
    "user_state_within_max_age": (dg.AssetCheckSeverity.WARN, "Every current user snapshot is younger than its maximum age."),
    "sources_reachable": (dg.AssetCheckSeverity.ERROR, "Every configured source root exists (a missing root is never read as deletions)."),
    "no_unobserved_change_older_than_sla": (
        dg.AssetCheckSeverity.WARN, "No change in a source has gone unobserved (no watcher, no sync) for longer than the SLA."
    ),
    "no_stale_hits": (
        dg.AssetCheckSeverity.WARN, "The share of served results whose source had already changed is within stale_hit_rate_max."
    ),
}


# After every index change (a Dagster run or the warm path's reported update), not only on the
# schedule. A reconciliation is ignored: reconcile_job materializes the report itself, and a
# home that was never reconciled must not wait for its first reconciliation.
FRESHNESS_AUTOMATION = dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets("source_reconciliation"))


class FreshnessConfig(dg.Config):
    """Zero thresholds mean the home's ``freshness_sla_seconds`` / ``user_state_max_age_hours``;
    an unset ``stale_hit_rate_max`` means the home's (0 is a real threshold there)."""

    window_hours: float = 24.0
    sla_seconds: float = 0.0
    user_max_age_hours: float = 0.0
    stale_hit_rate_max: Optional[float] = None


def _ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else ("—" if value is None else str(value))


def _num(value: float | None) -> float:
    # Dagster plots numbers only; NaN keeps "no data" apart from a real 0
    return float("nan") if value is None else round(float(value), 3)


def _run_started_at(context: dg.AssetExecutionContext) -> datetime:
    record = context.instance.get_run_record_by_id(context.run.run_id)
    started = record.start_time if record is not None else None
    if started is None:  # not started as far as the instance knows: the oldest step start will do
        started = context.instance.get_run_stats(context.run.run_id).start_time or time.time()
    return datetime.fromtimestamp(started, tz=timezone.utc)


@dg.asset(group_name="freshness", deps=[company_chunk_index, user_state_index], kinds={"python"})
def source_reconciliation(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
    """What the full re-hash of this run changed (the journal missed it), and the journal it settled.

    Run by ``reconcile_job`` after a full scan of both lineages; every journal row seen before
    the run started is covered by that scan and is marked applied.
    """
    cs = store.open()
    started = _run_started_at(context)
    diff = reconciliation_diff(cs, started)
    settled = mark_applied(cs, by="reconcile", seen_before=started)
    if diff["differences"]:
        context.log.warning(
            "reconciliation found %d differences (%d never journaled): %s",
            diff["differences"], diff["missed_by_journal"], ", ".join(diff["missed_sample"][:5]),
        )
    meta: dict[str, Any] = {k: v for k, v in diff.items() if isinstance(v, int)}
    meta["journal_rows_settled"] = settled
    meta["scan_started_at"] = started.isoformat()
    if diff["missed_sample"]:
        meta["missed_sample"] = md_table(["state"], [[m] for m in diff["missed_sample"]])
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    group_name="freshness",
    # after a reconciliation when both run, so the report sees the journal it settled
    deps=[company_chunk_index, user_state_index, source_reconciliation],
    kinds={"python"},
    automation_condition=FRESHNESS_AUTOMATION,
    check_specs=[dg.AssetCheckSpec(name, asset="freshness_report", description=desc) for name, (_, desc) in FRESHNESS_CHECKS.items()],
)
def freshness_report(config: FreshnessConfig, store: StoreResource) -> dg.MaterializeResult:
    """How stale the context is: lag percentiles, unindexed and unobserved changes, user-state age, stalest documents, stale hits."""
    cs = store.open()
    report = build_freshness_report(cs, window_hours=config.window_hours)
    sla = config.sla_seconds or cs.settings.freshness_sla_seconds
    max_age = config.user_max_age_hours or cs.settings.user_state_max_age_hours
    stale_max = cs.settings.stale_hit_rate_max if config.stale_hit_rate_max is None else config.stale_hit_rate_max
    outcomes = evaluate_checks(report, sla_seconds=sla, max_age_hours=max_age, stale_hit_rate_max=stale_max)
    return dg.MaterializeResult(
        metadata=_report_metadata(report, sla),
        check_results=[
            dg.AssetCheckResult(
                check_name=o.name,
                passed=o.passed,
                severity=FRESHNESS_CHECKS[o.name][0],
                description=o.detail,
                metadata={"value": _num(o.value), "threshold": _num(o.threshold)},
            )
            for o in outcomes
        ],
    )


def _report_metadata(report: FreshnessReport, sla: float) -> dict[str, Any]:
    """The report as asset metadata: numbers the UI plots across materializations, tables of examples."""
    metadata: dict[str, Any] = {}
    for kind, stats in report.lag.items():
        metadata[f"{kind}_lag_p50_s"] = _num(stats.p50_s)
        metadata[f"{kind}_lag_p95_s"] = _num(stats.p95_s)
        metadata[f"{kind}_lag_max_s"] = _num(stats.max_s)
        metadata[f"{kind}_versions_in_window"] = stats.count
    metadata.update(
        {
            "unindexed_changes": report.unindexed.count,
            "unindexed_oldest_age_s": _num(report.unindexed.oldest_age_s),
            "users_current": report.users.current,
            "users_past_max_age": len(report.users.stale),
            "user_oldest_age_h": _num(report.users.oldest_age_hours),
            "missing_source_roots": len(report.missing_roots),
            "journal_unapplied": report.journal_unapplied,
            "sla_seconds": sla,
            "stalest_documents": md_table(
                ["document", "state", "lag (s)", "source changed", "committed"],
                [[r["doc_id"], r["state"], r["lag_s"], _ts(r["source_changed_at"]), _ts(r["committed_at"])] for r in report.stalest],
            ) if report.stalest else dg.MetadataValue.md("_no indexed changes measured yet_"),
        }
    )
    metadata.update(_stale_metadata(report))
    metadata.update(_unobserved_metadata(report))
    if report.unindexed.items:
        metadata["unindexed_sample"] = md_table(
            ["kind", "what", "since", "seen in"], [[i.state_kind, i.what, _ts(i.since), i.via] for i in report.unindexed.items[:10]]
        )
    return metadata


def _stale_metadata(report: FreshnessReport) -> dict[str, Any]:
    """The stale-hit rate, its examples, and how long users were exposed per document."""
    st = report.stale
    exposed = st.exposed()
    metadata: dict[str, Any] = {
        "stale_hit_rate": _num(st.rate),
        "served_results": st.served,
        "stale_hits": st.stale,
        "traces_read": st.traces,
        "traces_capped": st.capped,
        "stale_exposed_documents": len(exposed),
        "stale_exposed_minutes_max": _num(exposed[0].minutes if exposed else None),
        "stale_exposed_minutes_total": _num(sum(e.minutes for e in exposed)),
    }
    if st.hits:
        metadata["stale_hit_sample"] = md_table(
            ["version", "doc", "served at", "superseded at", "source changed"],
            [[h.version_id, h.key, _ts(h.served_at), _ts(h.superseded_at), _ts(h.changed_at)] for h in st.hits[:20]],
        )
        metadata["stale_exposure"] = md_table(
            ["document", "stale results", "source changed", "last served stale", "exposed (min)"],
            [[e.key, e.hits, _ts(e.changed_at), _ts(e.last_served), round(e.minutes, 1)] for e in exposed[:20]],
        )
    else:
        metadata["stale_hit_sample"] = dg.MetadataValue.md(f"_no stale hits among {st.served} served results_")
    return metadata


def _unobserved_metadata(report: FreshnessReport) -> dict[str, Any]:
    """Changes in the sources no watcher or sync has seen: the count, the oldest age, per source."""
    un = report.unobserved
    metadata: dict[str, Any] = {
        "unobserved_changes": un.count,
        "unobserved_oldest_age_s": _num(un.oldest_age_s),
        "unobserved_scan_s": _num(un.seconds),
        "source_files_scanned": un.files,
    }
    rows = [[s.state_kind, s.source_name, s.files, s.changed, s.added, s.removed, _num(s.oldest_age_s),
             s.items[0].path if s.items else "—"] for s in un.sources]
    metadata["unobserved_by_source"] = md_table(
        ["kind", "source", "files", "changed", "added", "removed", "oldest age (s)", "oldest"], rows
    ) if rows else dg.MetadataValue.md("_no sources configured_")
    return metadata


class CompactionConfig(dg.Config):
    cleanup_older_than_hours: float = 24.0
    journal_keep_days: float = 30.0


def _table_stats(cs: ContextStore) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name in (cs.index.company_table_name, cs.index.user_table_name):
        table = cs.index.table(name)
        if table is None:
            continue
        stats = table.stats()
        fragments = stats["fragment_stats"] if isinstance(stats, dict) else stats.fragment_stats
        num_fragments = fragments["num_fragments"] if isinstance(fragments, dict) else fragments.num_fragments
        out[name] = {"versions": len(table.list_versions()), "fragments": int(num_fragments), "rows": table.count_rows()}
    return out


@dg.op(tags={"kind": "lancedb"})
def compact_lancedb(context: dg.OpExecutionContext, config: CompactionConfig, store: StoreResource) -> dg.Output:
    """Compact LanceDB fragments, fold new rows into the full-text index, delete old table versions;
    prune applied change-journal rows.

    Old versions only serve LanceDB time travel; history lives in SQL, so a day is plenty.
    """
    cs = store.open()
    before = _table_stats(cs)
    started = time.perf_counter()
    cs.index.optimize(cleanup_older_than=timedelta(hours=config.cleanup_older_than_hours))
    after = _table_stats(cs)
    pruned = prune_journal(cs, older_than=datetime.now(timezone.utc) - timedelta(days=config.journal_keep_days))
    meta: dict[str, Any] = {"seconds": round(time.perf_counter() - started, 3), "journal_rows_pruned": pruned}
    for name, stats in after.items():
        for key, value in stats.items():
            meta[f"{name}_{key}_before"] = before.get(name, {}).get(key, 0)
            meta[f"{name}_{key}_after"] = value
    context.log.info("compacted LanceDB: %s", after)
    return dg.Output(None, metadata=meta)
