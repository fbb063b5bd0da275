"""``eval routing`` and ``eval clinc150``: routing quality next to a raw top-score baseline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from context_store.errors import FreshContextError
from pipeline.cli.eval_cmds import eval_group

KEYS = ("escalation_precision", "escalation_recall", "coverage_at_90", "coverage_at_95", "aurc", "ece", "escalation_rate", "answer_precision")


@eval_group.command(name="routing")
@click.option("--kb", "kb_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="BEIR-format directory (corpus.jsonl).")
@click.option("--queries", "queries_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSONL lines {text, answerable, expected_doc_ids?}.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Keep the evaluation home here (re-runs reuse its embeddings); default: a temporary directory.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2, 20), help="Cross-fitting folds for the confidence model and thresholds.")
@click.option("--target-precision", default=0.9, show_default=True, type=click.FloatRange(0.5, 0.999), help="Answer precision the escalation threshold is fitted to.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--seed", default=13, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def routing(kb_dir: Path, queries_path: Path, work_dir: Path | None, folds: int, target_precision: float, k: int, seed: int, as_json: bool) -> None:
    """Escalation precision/recall, coverage at 90/95 % precision, AURC and ECE, against a raw top-score threshold."""
    from context_store.index import SentenceTransformerEmbedder
    from context_store.measure import run_routing_eval

    def progress(done: int, total: int) -> None:
        if not as_json and sys.stderr.isatty():
            click.echo(f"\r{done}/{total} queries", err=True, nl=False)

    try:
        report = run_routing_eval(
            kb_dir, queries_path, SentenceTransformerEmbedder(), work_dir=work_dir, folds=folds, seed=seed,
            target_precision=target_precision, k=k, progress=progress,
        )
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    data = report.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{data['queries']} queries ({data['answerable']} answerable), {data['settings']['documents']} KB documents, "
               f"{folds}-fold cross-fitted, threshold fitted to {target_precision:.0%} answer precision")
    click.echo(f"{'metric':<22}{'policy':>10}{'baseline':>10}{'uncalibrated':>14}{'served':>10}")
    for key in KEYS:
        click.echo(f"{key:<22}{data[key]:>10.4f}{data['baseline'][key]:>10.4f}{data['uncalibrated_default'][key]:>14.4f}{data['served'][key]:>10.4f}")
    click.echo("policy: the API's calibrator, cross-fitted; baseline: raw top-1 cosine threshold; "
               "uncalibrated: the API's conservative default at its threshold; "
               f"served: what the API serves for this home ({data['served']['confidence_source']}) at its threshold")
    click.echo("escalations by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(data["escalations_by_reason"].items())))


@eval_group.command(name="clinc150")
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Folder with clinc150_full.jsonl and domains.json.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Where to write corpus.jsonl and queries.jsonl.")
@click.option("--kb-domains", default=5, show_default=True, type=int, help="Domains whose intents go into the KB (the rest are unanswerable).")
@click.option("--examples-per-intent", default=20, show_default=True, type=int)
@click.option("--queries-per-intent", default=10, show_default=True, type=int)
@click.option("--oos-queries", default=500, show_default=True, type=int)
@click.option("--seed", default=7, show_default=True, type=int)
def clinc150(src: Path, out: Path, kb_domains: int, examples_per_intent: int, queries_per_intent: int, oos_queries: int, seed: int) -> None:
    """Build a routing evaluation set (BEIR KB + labelled queries) from CLINC150."""
    from context_store.measure import convert_clinc150

    try:
        summary = convert_clinc150(src, out, kb_domains=kb_domains, examples_per_intent=examples_per_intent,
                                   queries_per_intent=queries_per_intent, oos_queries=oos_queries, seed=seed)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary))


COMMANDS: list[click.Command] = []  # registered on the eval group above
