"""``watch`` (change journal, optional warm apply), ``freshness`` (the report) and ``reconcile``."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import click

from context_store.errors import FreshContextError
from context_store.index import ApplyResult
from context_store.measure import evaluate_checks, freshness_report
from context_store.store import ContextStore

__all__ = ["COMMANDS"]


def _store(ctx: click.Context) -> ContextStore:
    try:
        return ContextStore.open(ctx.obj["home"])
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc


def _describe(result: ApplyResult) -> str:
    parts = []
    for label, sync, index in (("company", result.company, result.company_index), ("user", result.users, result.user_index)):
        if sync is None:
            continue
        scope = "full scan" if label in result.full_scans else "paths"
        parts.append(
            f"{label} ({scope}): {sync.new} new, {sync.changed} changed, {sync.deleted} deleted, {sync.skipped} skipped"
            + (f"; {index.chunks_embedded} embedded" if index else "")
        )
    return f"applied {len(result.applied_ids)} journal rows in {result.seconds:.2f} s — " + "; ".join(parts)


@click.command()
@click.option("--apply", "apply_changes", is_flag=True, help="Warm path: apply changes in this process (model loaded once) instead of leaving them to the Dagster sensors.")
@click.option("--observer", type=click.Choice(["auto", "inotify", "polling"]), default="auto", show_default=True, help="auto polls network and container mounts, where inotify sees nothing.")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, help="Seconds between polls (polling observer).")
@click.option("--debounce", type=float, default=0.2, show_default=True, help="Quiet seconds before a changed file is journaled.")
@click.option("--no-rescan", is_flag=True, help="Do not ask for a full re-hash at start (changes made while no watcher ran wait for reconciliation).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C).")
@click.pass_context
def watch(
    ctx: click.Context, apply_changes: bool, observer: str, poll_interval: float, debounce: float, no_rescan: bool, duration: float | None
) -> None:
    """Watch every configured source and journal what changes.

    Without --apply the journal is for the Dagster sensors (run `dagster dev` beside it);
    with --apply this process versions, embeds and indexes each change within seconds, and
    the runs are recorded in the same tables (and reported to Dagster when DAGSTER_HOME is set).
    """
    from context_store.index import WarmApplier
    from pipeline.warm_report import dagster_reporter
    from pipeline.watcher import SourceWatcher

    store = _store(ctx)
    if not store.settings.company_sources and not store.settings.user_sources:
        raise click.ClickException(f"{store.settings.home}: no sources configured; run `freshcontext init` first")
    applier: WarmApplier | None = None
    # journal first: changes made while the model loads are recorded, not missed
    watcher = SourceWatcher(
        store, mode=observer, debounce_s=debounce, poll_interval_s=poll_interval,
        on_journal=lambda _n: applier.wake() if applier else None,
    ).start(rescan=not no_rescan)
    for root, mode in watcher.modes().items():
        click.echo(f"watching {root} ({mode})", err=True)
    for root in sorted(watcher.missing_roots):
        click.echo(f"NOT watching {root}: missing or unmounted (its documents are kept); retrying", err=True)
    if apply_changes:
        from context_store.index import build_embedder

        embedder = build_embedder(store.settings.embedding, store.settings.home)
        click.echo(f"loading {embedder.name} once for the warm path…", err=True)
        embedder.encode(["warm up"])
        reporter = dagster_reporter()

        def on_apply(result: ApplyResult) -> None:
            click.echo(_describe(result), err=True)
            if reporter:
                reporter(result)

        applier = WarmApplier(store, embedder, on_apply=on_apply, backlog=watcher.backlog).start()
        applier.wake()
        click.echo("warm path ready", err=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while not stop.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        watcher.stop()
        if applier:
            applier.apply_once()
            applier.stop()
        st = watcher.stats
        click.echo(f"stopped: {st.events} events → {st.journaled} journal rows ({st.duplicates} duplicates dropped, {st.rescans} rescans)", err=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@click.command(name="freshness")
@click.option("--window-hours", type=float, default=24.0, show_default=True, help="Lag percentiles over versions committed in this window.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (report and checks).")
@click.option("--check", is_flag=True, help="Exit with status 1 when a check fails.")
@click.pass_context
def freshness_cmd(ctx: click.Context, window_hours: float, as_json: bool, check: bool) -> None:
    """How stale the context is: lag percentiles, unindexed and unobserved changes, user-state age, stale hits served."""
    store = _store(ctx)
    report = freshness_report(store, window_hours=window_hours)
    outcomes = evaluate_checks(
        report, sla_seconds=store.settings.freshness_sla_seconds, stale_hit_rate_max=store.settings.stale_hit_rate_max
    )
    if as_json:
        payload: dict[str, Any] = report.as_dict()
        payload["checks"] = [{"name": o.name, "passed": o.passed, "detail": o.detail} for o in outcomes]
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        click.echo(f"freshness of {store.settings.home} (last {window_hours:g} h)")
        for kind, stats in report.lag.items():
            click.echo(
                f"  {kind:<7} lag p50 {_age(stats.p50_s)}  p95 {_age(stats.p95_s)}  max {_age(stats.max_s)}  "
                f"over {stats.count} versions ({stats.backfill} backfill left out)"
            )
        u = report.unindexed
        click.echo(f"  not yet retrievable: {u.count}" + (f", oldest waiting {_age(u.oldest_age_s)}" if u.count else ""))
        for item in u.items[:5]:
            click.echo(f"    {item.state_kind}: {item.what} (since {item.since:%Y-%m-%d %H:%M:%S}, {item.via})")
        un = report.unobserved
        click.echo(f"  unobserved changes (no watcher or sync saw them): {un.count}"
                   + (f", oldest {_age(un.oldest_age_s)}" if un.count else "") + f" ({un.files} files stat-ed in {un.seconds:.2f} s)")
        for src in un.sources:
            if src.count:
                click.echo(f"    {src.state_kind} {src.source_name}: {src.changed} changed, {src.added} added, {src.removed} removed; "
                           f"oldest {_age(src.oldest_age_s)} ({src.items[0].path})")
        click.echo(f"  user snapshots past {report.users.max_age_hours:g} h: {len(report.users.stale)} of {report.users.current}")
        click.echo(f"  journal: {report.journal_rows} rows, {report.journal_unapplied} not applied")
        st = report.stale
        rate = "—" if st.rate is None else f"{st.rate:.4f}"
        click.echo(
            f"  stale-hit rate {rate}: {st.stale} of {st.served} served results (from {st.traces} responses"
            + (", capped" if st.capped else "") + f"; {st.as_of_traces} point-in-time left out)"
        )
        for hit in st.hits[:5]:
            changed = hit.changed_at or hit.superseded_at
            click.echo(f"    {hit.key} ({hit.version_id}) served {hit.served_at:%Y-%m-%d %H:%M:%S}, its source changed {changed:%Y-%m-%d %H:%M:%S}, "
                       f"superseded {hit.superseded_at:%Y-%m-%d %H:%M:%S}")
        for exposure in st.exposed()[:5]:
            click.echo(f"    exposed {exposure.minutes:.1f} min: {exposure.key} ({exposure.hits} stale results, last {exposure.last_served:%Y-%m-%d %H:%M:%S})")
        if report.stalest:
            click.echo("  stalest documents:")
            for row in report.stalest:
                click.echo(f"    {row['doc_id']:<50} {row['state']:<8} {_age(row['lag_s'])}")
        for o in outcomes:
            click.echo(f"  [{'ok' if o.passed else 'FAIL'}] {o.name}: {o.detail}")
    if check and not all(o.passed for o in outcomes):
        ctx.exit(1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.pass_context
def reconcile(ctx: click.Context, as_json: bool) -> None:
    """Re-hash every source now (the hourly schedule's job, in-process) and count the differences."""
    import os

    import dagster as dg

    from pipeline.definitions import build_defs

    home = str(ctx.obj["home"])
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    result = build_defs().resolve_job_def("reconcile_job").execute_in_process(instance=instance, raise_on_error=False)
    if not result.success:
        raise click.ClickException(f"reconciliation of {home} failed: see the Dagster run {result.run_id}")
    meta = {k: v.value for k, v in result.asset_materializations_for_node("source_reconciliation")[-1].metadata.items()}
    if as_json:
        click.echo(json.dumps(meta, indent=2, default=str))
        return
    click.echo(
        f"reconciled {home}: {meta.get('differences', 0)} differences "
        f"({meta.get('missed_by_journal', 0)} never journaled), {meta.get('journal_rows_settled', 0)} journal rows settled"
    )


COMMANDS = [watch, freshness_cmd, reconcile]
