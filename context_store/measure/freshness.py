"""How stale is the context? One report over lag, backlog, unobserved changes, user-state age and
stale hits, and its checks.

``freshness_report`` first records any missing lag timelines (``index.lag.record_lags``), then
reads them (``lag_stats``), the backlog (``measure.backlog``), the changes in the sources that
the pipeline has not observed (``state.observed``: a stat of every source file) and the stale
hits among what the API served (``measure.stale_hits``) for one window; ``evaluate_checks``
turns the report into pass/fail outcomes with their measured value and threshold, for asset
checks and the CLI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from context_store._common import percentile, utcnow
from context_store.index.lag import record_lags
from context_store.measure.backlog import UnindexedReport, UserAgeReport, stalest_documents, unindexed_changes, user_state_ages
from context_store.measure.checks import CheckOutcome
from context_store.measure.stale_hits import StaleHitReport, served_stale_hits
from context_store.state.observed import UnobservedReport, unobserved_changes
from context_store.store.context_store import ContextStore
from context_store.store.models import ChangeEvent, VersionLag

__all__ = ["FreshnessReport", "LagStats", "evaluate_checks", "freshness_report", "lag_stats"]

@dataclass
class LagStats:
    state_kind: str
    count: int
    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    backfill: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lag_stats(store: ContextStore, state_kind: str, *, since: datetime | None = None) -> LagStats:
    """Lag percentiles of versions committed since ``since`` (backfill left out, but counted)."""
    with store.session() as session:
        query = select(VersionLag.lag_seconds, VersionLag.backfill).where(VersionLag.state_kind == state_kind)
        if since is not None:
            query = query.where(col(VersionLag.committed_at) >= since)
        rows = session.exec(query).all()
    lags = [lag for lag, backfill in rows if not backfill]
    return LagStats(
        state_kind, len(lags), percentile(lags, 50), percentile(lags, 95), max(lags) if lags else None,
        backfill=sum(1 for _, b in rows if b),
    )


@dataclass
class FreshnessReport:
    generated_at: datetime
    window_hours: float
    lag: dict[str, LagStats]
    unindexed: UnindexedReport
    users: UserAgeReport
    stalest: list[dict[str, Any]]
    missing_roots: list[str]
    journal_rows: int
    journal_unapplied: int
    versions_recorded: int
    stale: StaleHitReport = field(default_factory=lambda: StaleHitReport(0, 0, 0, None))
    unobserved: UnobservedReport = field(default_factory=lambda: UnobservedReport([], 0, 0.0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "window_hours": self.window_hours,
            "lag": {k: v.as_dict() for k, v in self.lag.items()},
            "unindexed": {
                "count": self.unindexed.count,
                "oldest_since": self.unindexed.oldest_since.isoformat() if self.unindexed.oldest_since else None,
                "oldest_age_s": self.unindexed.oldest_age_s,
                "items": [{**asdict(i), "since": i.since.isoformat()} for i in self.unindexed.items[:20]],
            },
            "users": {
                "current": self.users.current,
                "max_age_hours": self.users.max_age_hours,
                "stale": len(self.users.stale),
                "oldest_age_hours": self.users.oldest_age_hours,
                "stale_sample": [{"user_id": u, "age_hours": round(a, 2)} for u, a in self.users.stale[:20]],
            },
            "stalest_documents": [
                {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in self.stalest
            ],
            "missing_roots": self.missing_roots,
            "journal_rows": self.journal_rows,
            "journal_unapplied": self.journal_unapplied,
            "versions_recorded": self.versions_recorded,
            "stale_hits": self.stale.as_dict(),
            "stale_hit_rate": self.stale.rate,
            "unobserved_changes": self.unobserved.as_dict(),
        }

    def headline(self) -> dict[str, Any]:
        """The numbers the support leads' report shows (``measure.report``)."""
        stale = self.stale.as_dict()
        return {
            "company_lag_p50_s": self.lag["company"].p50_s, "company_lag_p95_s": self.lag["company"].p95_s,
            "user_lag_p95_s": self.lag["user"].p95_s, "versions_measured": self.lag["company"].count + self.lag["user"].count,
            "unindexed_changes": self.unindexed.count, "users_past_max_age": len(self.users.stale),
            "stale_hit_rate": self.stale.rate, "served_results": self.stale.served, "stale_hits": self.stale.stale,
            "stale_hits_capped": self.stale.capped, "responses_read": self.stale.traces,
            "stale_exposure": stale["exposure"], "stale_exposed_minutes_max": stale["exposed_minutes_max"],
            "unobserved_changes": self.unobserved.count, "unobserved_oldest_age_s": self.unobserved.oldest_age_s,
            "unobserved_by_source": [src.as_dict() for src in self.unobserved.sources],
        }


def freshness_report(store: ContextStore, *, now: datetime | None = None, window_hours: float = 24.0) -> FreshnessReport:
    """Record missing timelines, then measure: lag, backlog, user age, stalest documents, roots,
    the changes no sync or watcher has seen yet, and the stale hits among the results the API
    served in the window."""
    recorded = record_lags(store)
    now = now or utcnow()
    since = now - timedelta(hours=window_hours)
    with store.session() as session:
        journal_rows = session.exec(select(func.count()).select_from(ChangeEvent)).one()
        unapplied = session.exec(select(func.count()).select_from(ChangeEvent).where(col(ChangeEvent.applied_at).is_(None))).one()
    roots = [*store.settings.company_sources, *store.settings.user_sources]
    return FreshnessReport(
        generated_at=now,
        window_hours=window_hours,
        lag={kind: lag_stats(store, kind, since=since) for kind in ("company", "user")},
        unindexed=unindexed_changes(store, now=now),
        users=user_state_ages(store, now=now),
        stalest=stalest_documents(store, now=now),
        missing_roots=[str(s.path) for s in roots if not Path(s.path).is_dir()],
        journal_rows=int(journal_rows),
        journal_unapplied=int(unapplied),
        versions_recorded=recorded,
        stale=served_stale_hits(store, since=since, until=now),
        unobserved=unobserved_changes(store, now=now),
    )


def evaluate_checks(
    report: FreshnessReport, *, sla_seconds: float, max_age_hours: float | None = None, stale_hit_rate_max: float = 0.0
) -> list[CheckOutcome]:
    """Pass/fail with the measured value and the threshold, for asset checks and the CLI."""
    max_age = report.users.max_age_hours if max_age_hours is None else max_age_hours
    outcomes: list[CheckOutcome] = []
    for kind in ("company", "user"):
        stats = report.lag[kind]
        passed = stats.p95_s is None or stats.p95_s <= sla_seconds
        detail = (
            f"no {kind} versions committed in the last {report.window_hours:g} h"
            if stats.p95_s is None
            else f"{kind} lag p95 {stats.p95_s:.1f} s over {stats.count} versions; SLA {sla_seconds:g} s"
        )
        outcomes.append(CheckOutcome(f"{kind}_lag_p95_within_sla", passed, detail, stats.p95_s, sla_seconds))
    age = report.unindexed.oldest_age_s
    outcomes.append(
        CheckOutcome(
            "no_unindexed_change_older_than_sla",
            age is None or age <= sla_seconds,
            "nothing waiting to be indexed" if age is None
            else f"{report.unindexed.count} changes not yet retrievable; the oldest waits {age:.0f} s; SLA {sla_seconds:g} s",
            age, sla_seconds,
        )
    )
    stale = report.users.stale
    outcomes.append(
        CheckOutcome(
            "user_state_within_max_age",
            not stale,
            f"all {report.users.current} current user snapshots are under {max_age:g} h" if not stale
            else f"{len(stale)} of {report.users.current} user snapshots are older than {max_age:g} h (oldest {stale[0][1]:.1f} h: {stale[0][0]})",
            report.users.oldest_age_hours, max_age,
        )
    )
    outcomes.append(
        CheckOutcome(
            "sources_reachable",
            not report.missing_roots,
            "every configured source root is a readable folder" if not report.missing_roots
            else "missing or unmounted (their documents are kept, not deleted): " + ", ".join(report.missing_roots),
            float(len(report.missing_roots)), 0.0,
        )
    )
    outcomes.append(_unobserved_check(report.unobserved, sla_seconds))
    outcomes.append(_stale_hit_check(report, stale_hit_rate_max))
    return outcomes


def _unobserved_check(unobserved: UnobservedReport, sla_seconds: float) -> CheckOutcome:
    oldest, age = unobserved.oldest, unobserved.oldest_age_s
    if oldest is None or age is None:
        detail = f"every change in the {unobserved.files} source files has been observed"
    else:
        first = oldest.items[0]
        detail = (
            f"{unobserved.count} changes in the sources were never observed (no watcher saw them, no sync read them); "
            f"the oldest, {first.path} ({first.change}), is {age:.0f} s old; SLA {sla_seconds:g} s"
        )
    return CheckOutcome("no_unobserved_change_older_than_sla", age is None or age <= sla_seconds, detail, age, sla_seconds)


def _stale_hit_check(report: FreshnessReport, stale_hit_rate_max: float) -> CheckOutcome:
    st = report.stale
    capped = f" (capped at the first {st.traces} responses)" if st.capped else ""
    if st.rate is None:
        detail = f"no served results in the last {report.window_hours:g} h{capped}"
    else:
        detail = (
            f"{st.stale} of {st.served - st.unknown} served results quoted a version whose source had already changed "
            f"(rate {st.rate:.4f}; max {stale_hit_rate_max:g}){capped}"
        )
        if st.hits:
            first = st.hits[0]
            changed = first.changed_at or first.superseded_at
            detail += f"; e.g. {first.key} served {first.served_at:%Y-%m-%d %H:%M:%S}, its source changed {changed:%Y-%m-%d %H:%M:%S}"
        exposed = st.exposed()
        if exposed:
            detail += f"; users exposed up to {exposed[0].minutes:.1f} min ({exposed[0].key})"
    return CheckOutcome("no_stale_hits", st.rate is None or st.rate <= stale_hit_rate_max, detail, st.rate, stale_hit_rate_max)
