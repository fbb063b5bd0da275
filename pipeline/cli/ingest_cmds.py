"""``init``, ``demo``, ``ingest``, ``status`` and ``query``."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from sqlmodel import col, func, select

from context_store.errors import FreshContextError
from context_store.index import pending_documents
from context_store.settings import CONFIG_FILE, Settings
from context_store.state import open_skips, unobserved_changes
from context_store.store import ContextStore, Document, DocumentVersion, UserRecord, UserSnapshotVersion, last_runs, utcnow

REPO_DEMO = Path(__file__).resolve().parents[2] / "demo"


def _home(ctx: click.Context) -> Path:
    return ctx.obj["home"]


@click.command()
@click.option("--company-dir", "company_dirs", multiple=True, type=click.Path(file_okay=False), help="A folder of help articles (repeatable).")
@click.option("--user-dir", "user_dirs", multiple=True, type=click.Path(file_okay=False), help="A folder of user snapshots (repeatable).")
@click.option("--model", default=None, help="sentence-transformers model name or path (default: bundled all-MiniLM-L6-v2).")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.pass_context
def init(ctx: click.Context, company_dirs: tuple[str, ...], user_dirs: tuple[str, ...], model: str | None, force: bool) -> None:
    """Write HOME/freshcontext.yaml naming the sources to ingest."""
    from assets.resources import source_configs_for_dirs  # imports Dagster, which `serve` and `watch` never need

    home = _home(ctx)
    if (home / CONFIG_FILE).exists() and not force:
        raise click.ClickException(f"{home / CONFIG_FILE} exists; pass --force to overwrite it")
    overrides: dict[str, Any] = {
        "company_sources": source_configs_for_dirs(list(company_dirs)),
        "user_sources": source_configs_for_dirs(list(user_dirs)),
    }
    if model:
        overrides["embedding"] = {"model": model}
    settings = Settings.load(home, **overrides)
    path = settings.save()
    click.echo(f"wrote {path}")


@click.command()
@click.option("--demo-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=REPO_DEMO, show_default=True)
@click.pass_context
def demo(ctx: click.Context, demo_dir: Path) -> None:
    """Set up HOME with the bundled demo help centre and users, then ingest.

    The first time, it ingests the original articles, then applies demo/company_edits and
    demo/users_edits and ingests again, so the history shows real versions, and fits a
    calibrator on the demo's golden questions (HOME/calibrator.json, unless one exists), so the
    API answers clear questions and escalates the rest. Later calls only ingest whatever
    changed in HOME/sources.
    """
    home = _home(ctx)
    company, users, staff = home / "sources" / "company", home / "sources" / "users", home / "sources" / "staff_answers"
    first_time = not (home / CONFIG_FILE).exists()
    if first_time:
        click.echo(f"setting up demo home in {home}")
        shutil.copytree(demo_dir / "company", company, dirs_exist_ok=True)
        # The bundled snapshots carry capture dates from when they were written; the demo
        # stamps them as captured an hour before setup (the edits: at setup), so user-state
        # age and the staleness triggers mean something on the day the demo runs.
        setup_time = utcnow()
        for folder in ("users", "users_export"):
            if (demo_dir / folder).is_dir():
                for src in (demo_dir / folder).iterdir():
                    _copy_snapshot(src, users / src.name, setup_time - timedelta(hours=1))
        staff.mkdir(parents=True, exist_ok=True)
        api_key = secrets.token_urlsafe(24)
        Settings.load(
            home,
            company_sources=[{"name": "company", "path": str(company)}, {"name": "staff", "path": str(staff), "kind": "staff_answer"}],
            user_sources=[{"name": "users", "path": str(users)}],
            # the team's labelled questions about this help centre: what the quality checks measure
            quality={"golden_sets": [{"name": "demo", "path": str(demo_dir / "golden" / "questions.jsonl")}]},
            api_keys=[{"name": "demo", "key": api_key, "role": "admin"}],  # one key for everything the demo shows
        ).save()
        click.echo(f"demo API key (also in {home / CONFIG_FILE}): {api_key}")
        _run_ingest(home, progress=True)
        click.echo("applying the demo's later edits (new versions of some articles and users)")
        for edits, target in ((demo_dir / "company_edits", company), (demo_dir / "users_edits", users)):
            if edits.is_dir():
                for src in edits.rglob("*"):
                    if src.is_file() and src.name != "README.md":
                        dst = target / src.relative_to(edits)
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        if target == users:
                            _copy_snapshot(src, dst, setup_time)
                        else:
                            shutil.copyfile(src, dst)
    _run_ingest(home, progress=True)
    from pipeline.cli.outcomes_cmds import fit_demo_calibrator

    fit_demo_calibrator(home, demo_dir / "golden" / "questions.jsonl")  # answer the clear questions, escalate the rest


def _records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(text)] if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]


def _copy_snapshot(src: Path, dst: Path, captured_at: datetime) -> None:
    records = _records(src)
    for record in records:
        record["captured_at"] = captured_at.isoformat()
    dst.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(records[0], indent=2) if src.suffix == ".json" else "\n".join(json.dumps(r) for r in records)
    dst.write_text(body + "\n", encoding="utf-8")


def _run_ingest(
    home: Path, *, company_dirs: list[str] | None = None, user_dirs: list[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    from pipeline.runner import materialize_ingest

    started = time.perf_counter()
    result = materialize_ingest(
        str(home), company_dirs=company_dirs, user_dirs=user_dirs, show_progress=progress and sys.stderr.isatty()
    )
    summary: dict[str, Any] = {"success": result.success, "seconds": round(time.perf_counter() - started, 2), "assets": {}}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        summary["assets"][mat.asset_key.to_user_string()] = {
            k: v.value for k, v in mat.metadata.items() if isinstance(v.value, (int, float, str)) and k != "skipped_inputs"
        }
    summary["checks"] = {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()
    }
    for name, meta in summary["assets"].items():
        shown = ", ".join(f"{k}={v}" for k, v in meta.items() if not isinstance(v, str) or k == "model")
        click.echo(f"{name}: {shown}", err=True)
    for name, passed in summary["checks"].items():
        click.echo(f"check {name}: {'passed' if passed else 'FAILED'}", err=True)
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise click.ClickException("ingest failed: " + "; ".join(str(f) for f in failures[:3]))
    return summary


@click.command()
@click.option("--company-dir", "company_dirs", multiple=True, type=click.Path(file_okay=False), help="Use this company folder instead of the configured ones (repeatable).")
@click.option("--user-dir", "user_dirs", multiple=True, type=click.Path(file_okay=False), help="Use this user-snapshot folder instead of the configured ones (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def ingest(ctx: click.Context, company_dirs: tuple[str, ...], user_dirs: tuple[str, ...], as_json: bool, no_progress: bool) -> None:
    """Run the ingest asset graph in-process: version, chunk, embed what changed, index, audit."""
    summary = _run_ingest(_home(ctx), company_dirs=list(company_dirs), user_dirs=list(user_dirs), progress=not no_progress)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))


def _open(ctx: click.Context) -> ContextStore:
    try:
        return ContextStore.open(_home(ctx))
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Counts, last runs, skipped inputs and stale sources of HOME."""
    store = _open(ctx)
    report = collect_status(store)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    c = report["counts"]
    click.echo(f"home: {store.settings.home}")
    click.echo(
        f"documents: {c['documents_current']} current, {c['documents_deleted']} deleted, {c['document_versions']} versions; "
        f"{c['company_chunks']} chunks in LanceDB"
    )
    click.echo(f"users: {c['users_current']} current, {c['user_versions']} snapshot versions; {c['user_facts']} facts in LanceDB")
    click.echo(f"pending (changed, not yet indexed): {c['pending_documents']} documents")
    _echo_unobserved(report["unobserved_changes"], store.settings.freshness_sla_seconds)
    click.echo("last runs:")
    for run in report["last_runs"][:6]:
        click.echo(f"  {run['started_at']}  {run['state_kind']:<7} {run['stage']:<8} {run['status']:<9} via {run['trigger']}")
    click.echo(f"skipped inputs ({len(report['skipped'])}):")
    for s in report["skipped"][:20]:
        click.echo(f"  [{s['reason']}] {s['path']}: {s['detail']}")
    stale = report["stale"]
    click.echo(f"stale sources: {len(stale['missing_roots'])} missing roots, {len(stale['stale_users'])} users past {store.settings.user_state_max_age_hours:g} h")
    for root in stale["missing_roots"]:
        click.echo(f"  missing: {root}")
    for user in stale["stale_users"][:10]:
        click.echo(f"  user {user['user_id']}: snapshot {user['age_hours']:.1f} h old")


def _echo_unobserved(unobserved: dict[str, Any], sla_seconds: float) -> None:
    """Per source: changes no watcher or sync has seen (``state.observed``), and how old the oldest is."""
    click.echo(f"unobserved changes (no watcher or sync saw them yet): {unobserved['count']}, "
               f"{unobserved['files_scanned']} files stat-ed in {unobserved['scan_seconds']:.2f} s")
    for src in unobserved["sources"]:
        if src["missing_root"]:
            click.echo(f"  {src['state_kind']} {src['source']}: root missing, not scanned")
        elif src["count"]:
            over = " — older than the SLA" if (src["oldest_age_s"] or 0) > sla_seconds else ""
            click.echo(f"  {src['state_kind']} {src['source']}: {src['changed']} changed, {src['added']} added, "
                       f"{src['removed']} removed; oldest {src['oldest_age_s']:.0f} s ({src['items'][0]['path']}){over}")
    if unobserved["count"]:
        click.echo("  run `freshcontext reconcile` (or keep `freshcontext watch --apply` running) to take them in")


def collect_status(store: ContextStore) -> dict[str, Any]:
    now = utcnow()
    with store.session() as s:
        counts = {
            "documents_current": s.exec(select(func.count()).select_from(Document).where(col(Document.current_version_id).is_not(None))).one(),
            "documents_deleted": s.exec(select(func.count()).select_from(Document).where(col(Document.current_version_id).is_(None))).one(),
            "document_versions": s.exec(select(func.count()).select_from(DocumentVersion)).one(),
            "users_current": s.exec(select(func.count()).select_from(UserRecord).where(col(UserRecord.current_version_id).is_not(None))).one(),
            "user_versions": s.exec(select(func.count()).select_from(UserSnapshotVersion)).one(),
            "pending_documents": len(pending_documents(s)),
        }
        skipped = [
            {"state_kind": k.state_kind, "path": k.path, "reason": k.reason, "detail": k.detail, "last_seen": k.last_seen}
            for k in open_skips(s)
        ]
        max_age = store.settings.user_state_max_age_hours
        stale_users = []
        for user_id, captured in s.exec(
            select(UserSnapshotVersion.user_id, UserSnapshotVersion.captured_at).join(
                UserRecord, col(UserRecord.current_version_id) == col(UserSnapshotVersion.version_id)
            )
        ).all():
            age_h = (now - captured).total_seconds() / 3600
            if age_h > max_age:
                stale_users.append({"user_id": user_id, "age_hours": age_h})
    counts["company_chunks"] = store.index.count(store.index.company_table_name)
    counts["user_facts"] = store.index.count(store.index.user_table_name)
    missing_roots = [
        str(src.path) for src in [*store.settings.company_sources, *store.settings.user_sources] if not Path(src.path).is_dir()
    ]
    runs = [
        {"started_at": r.started_at, "finished_at": r.finished_at, "state_kind": r.state_kind, "stage": r.stage,
         "status": r.status, "trigger": r.trigger, "stats": r.stats}
        for r in last_runs(store, 12)
    ]
    return {
        "counts": counts,
        "unobserved_changes": unobserved_changes(store, now=now).as_dict(),
        "last_runs": runs,
        "skipped": skipped,
        "stale": {"missing_roots": missing_roots, "stale_users": sorted(stale_users, key=lambda u: -u["age_hours"])},
    }


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


COMMANDS = [init, demo, ingest, status]
