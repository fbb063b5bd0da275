"""``outcomes``: list and export what happened after responses (CSV or JSONL), and the resolution scorecard."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import click

from context_store.errors import FreshContextError
from context_store.route import DERIVED_OUTCOMES, OUTCOMES, list_outcomes
from context_store.store import ContextStore

COLUMNS = ("event_id", "trace_id", "conversation_id", "user_id", "outcome", "source", "csat", "thumbs", "note", "at", "recorded_at",
           "review_question_id", "confidence", "decision", "query", "client")


def parse_day(value: str | None) -> datetime | None:
    """A date (``2026-12-01``) or an ISO-8601 time, naive meaning UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date (2026-12-01) or an ISO-8601 time") from exc
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed


def _open_out(path: str) -> IO[str]:
    return sys.stdout if path == "-" else Path(path).open("w", encoding="utf-8", newline="")


def _write(rows: list[dict[str, Any]], path: str, fmt: str) -> None:
    out = _open_out(path)
    try:
        if fmt == "csv":
            writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        else:
            for row in rows:
                out.write(json.dumps(row, default=str) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


@click.command()
@click.option("--since", default=None, help="Only outcomes at or after this date or time (UTC unless it says otherwise).")
@click.option("--until", default=None, help="Only outcomes before this date or time.")
@click.option("--outcome", "kind", type=click.Choice([*OUTCOMES, *DERIVED_OUTCOMES]), default=None, help="Only this kind.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many (oldest first).")
@click.option("--csv", "csv_path", default=None, help="Export as CSV to this file ('-' for stdout).")
@click.option("--jsonl", "jsonl_path", default=None, help="Export as JSON lines to this file ('-' for stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: the outcomes and their counts by kind.")
@click.pass_context
def outcomes(ctx: click.Context, since: str | None, until: str | None, kind: str | None, limit: int | None,
             csv_path: str | None, jsonl_path: str | None, as_json: bool) -> None:
    """What happened after responses: reported by the agent platform or derived (repeat contacts)."""
    try:
        rows = list_outcomes(ContextStore.open(ctx.obj["home"]), since=parse_day(since), until=parse_day(until), outcome=kind, limit=limit)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    if csv_path or jsonl_path:
        for path, fmt in ((csv_path, "csv"), (jsonl_path, "jsonl")):
            if path:
                _write(rows, path, fmt)
                if path != "-":
                    click.echo(f"wrote {len(rows)} outcomes to {path}", err=True)
        return
    if as_json:
        click.echo(json.dumps({"outcomes": rows, "count": len(rows), "by_kind": counts}, indent=2, default=str))
        return
    if not rows:
        click.echo("no outcomes" + (" in that period" if since or until else " yet: POST /v1/outcomes reports them"))
        return
    for row in rows:
        rating = " ".join(x for x in (f"csat {row['csat']}" if row["csat"] is not None else "", f"thumbs {row['thumbs']}" if row["thumbs"] else "") if x)
        review = f" -> review {row['review_question_id']}" if row["review_question_id"] else ""
        click.echo(f"{row['at'][:19]}  {row['outcome']:<18} {row['source']:<8} {row['trace_id']}  "
                   f"{row['decision']} at {row['confidence']:.2f}  {rating}{review}  {row['query'][:60]!r}")
    click.echo(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


COMMANDS = [outcomes]


def calibrate_outcomes(home: Path, *, since: str | None, target_precision: float | None, force: bool, as_json: bool) -> None:
    """``calibrate --outcomes``: fit on outcomes, show old and new side by side, save when at least as good (or ``force``)."""
    from context_store.measure import calibrate_from_outcomes
    from context_store.route import CALIBRATOR_FILE

    try:
        store = ContextStore.open(home)
        result = calibrate_from_outcomes(store, since=parse_day(since), target_precision=target_precision)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    saved = result.passed or force
    path = result.candidate.save(home / CALIBRATOR_FILE) if saved else None
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "saved": str(path) if path else None}, indent=2, default=str))
        return
    click.echo(f"fitted on {result.train} answered responses with outcomes, judged on the {result.heldout} newest "
               f"(target answer precision {result.target_precision:.0%})")
    click.echo(f"{'held out':<26}{result.old.name:>22}{result.new.name:>16}")
    for key, label in (("threshold", "threshold"), ("ece", "ECE"), ("coverage_at_target", "coverage at target"),
                       ("answer_rate", "answer rate at threshold"), ("precision", "precision at threshold")):
        old, new = getattr(result.old, key), getattr(result.new, key)
        click.echo(f"{label:<26}{'—' if old is None else f'{old:.3f}':>22}{'—' if new is None else f'{new:.3f}':>16}")
    click.echo(f"ECE of the confidence the API served on those answers: {result.served_ece:.3f}")
    if path is not None:
        click.echo(f"saved {path}" + ("" if result.passed else " (--force: it is worse on held-out answers)")
                   + "; a running API picks it up within retrieval.calibrator_check_seconds")
    else:
        click.echo(f"not saved: {result.reason}; the calibrator in use stays (--force saves it anyway)")


def fit_demo_calibrator(home: Path, golden: Path) -> None:
    """``demo``: a first calibrator from the demo's own golden set, unless HOME has one (it may come from outcomes)."""
    from context_store.index import build_embedder
    from context_store.measure import calibrate_on_questions, load_questions
    from context_store.route import CALIBRATOR_FILE

    if (home / CALIBRATOR_FILE).exists():
        return
    store = ContextStore.open(home)
    try:
        calibrator, summary = calibrate_on_questions(store, build_embedder(store.settings.embedding, home), load_questions(golden),
                                                     name=str(golden))
    except FreshContextError as exc:
        click.echo(f"no calibrator fitted ({exc}); every question escalates until one is", err=True)
        return
    calibrator.save(home / CALIBRATOR_FILE)
    click.echo(f"calibrator fitted on the demo's {summary['questions']} golden questions: threshold {summary['threshold']:.3f} for "
               f"{summary['target_precision']:.0%} answer precision; answers {summary['answer_rate']:.0%} of them "
               f"({summary['answer_precision']:.0%} right), escalates {summary['escalation_rate']:.0%}", err=True)
