"""``calibrate``: fit the confidence calibrator on a labelled BEIR set, or on outcomes (``--outcomes``), and store it in HOME."""

from __future__ import annotations

import json
from pathlib import Path

import click

from context_store.errors import FreshContextError
from context_store.measure import crossfit_ece, expected_calibration_error, run_queries
from context_store.retrieve import MODES
from context_store.route import CALIBRATOR_FILE, fit_calibrator
from context_store.settings import Settings
from pipeline.cli.eval_retrieval import beir_home, load_dataset, retriever_for


@click.command()
@click.option("--beir", "beir_dir", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path), help="BEIR folder with labelled queries.")
@click.option("--outcomes", "from_outcomes", is_flag=True, help="Fit on served answers and their outcomes instead (see `outcomes`).")
@click.option("--since", default=None, help="--outcomes: only answers served at or after this date.")
@click.option("--target-precision", type=click.FloatRange(0.5, 0.999), default=None,
              help="--outcomes: the answer precision the stored threshold is chosen for (default: outcomes.target_precision).")
@click.option("--force", is_flag=True, help="--outcomes: save the new calibrator even when it is worse on held-out answers.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 100), help='Outcome to predict: "a relevant document is in the top k".')
@click.option("--mode", type=click.Choice(MODES), default=None, help="Retrieval mode to calibrate (default: HOME's configured mode).")
@click.option("--work-home", type=click.Path(file_okay=False, path_type=Path), default=None, help="Ingest here and keep it (default: temporary).")
@click.option("--json", "as_json", is_flag=True, help="Print the fitted calibrator and its held-out error as JSON.")
@click.pass_context
def calibrate(ctx: click.Context, beir_dir: Path | None, from_outcomes: bool, since: str | None, target_precision: float | None,
              force: bool, k: int, mode: str | None, work_home: Path | None, as_json: bool) -> None:
    """Fit confidence (logistic on retrieval features) on a BEIR set or on outcomes, and save HOME/calibrator.json."""
    home: Path = ctx.obj["home"]
    if from_outcomes == (beir_dir is not None):
        raise click.UsageError("give either --beir DIR (a labelled set) or --outcomes (what users got)")
    if from_outcomes:
        from pipeline.cli.outcomes_cmds import calibrate_outcomes

        calibrate_outcomes(home, since=since, target_precision=target_precision, force=force, as_json=as_json)
        return
    try:
        settings = Settings.load(home)
        mode = mode or settings.retrieval.mode
        dataset = load_dataset(beir_dir)
        with beir_home(dataset, work_home, mode=mode) as eval_home:
            retriever = retriever_for(eval_home, home)
            with click.progressbar(length=len(dataset.judged_queries()), label="ranking", file=click.get_text_stream("stderr")) as bar:
                run = run_queries(retriever, dataset, mode, depth=k, progress=bar.update)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    qids = sorted(run.ranked)
    outcomes = {q: any(dataset.qrels.get(q, {}).get(d, 0) > 0 for d in run.ranked[q][:k]) for q in qids}
    if len(set(outcomes.values())) < 2:
        raise click.ClickException(f"every query has the same outcome (hit@{k} = {next(iter(outcomes.values()))}); nothing to calibrate on")
    heldout = crossfit_ece(run.features, outcomes, k=k, mode=mode)
    calibrator = fit_calibrator(
        [run.features[q] for q in qids], [outcomes[q] for q in qids], k=k, mode=mode,
        model=retriever.embedder.name, fitted_on=str(beir_dir.resolve()), heldout_ece=heldout,
    )
    path = calibrator.save(home / CALIBRATOR_FILE)
    confidences = [calibrator.predict(run.features[q]) for q in qids]
    threshold = settings.retrieval.confidence_threshold
    answered = [outcomes[q] for q, c in zip(qids, confidences) if c >= threshold]
    summary = {
        "path": str(path), "queries": len(qids), "k": k, "mode": mode, "positive_rate": calibrator.positive_rate,
        "heldout_ece": heldout, "train_ece": expected_calibration_error(confidences, [outcomes[q] for q in qids]),
        "threshold": threshold, "answer_rate": len(answered) / len(qids),
        "answer_precision": (sum(answered) / len(answered)) if answered else None,
        "coef": dict(zip(calibrator.features, calibrator.coef)),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"fitted on {len(qids)} queries ({summary['positive_rate']:.1%} with a relevant document in the top {k}); saved {path}")
    click.echo(f"held-out ECE {heldout:.4f}" if heldout is not None else "held-out ECE: too few queries for 2 folds")
    precision = summary["answer_precision"]
    click.echo(
        f"at threshold {threshold:g}: answers {summary['answer_rate']:.1%} of queries"
        + (f", {precision:.1%} of them with a relevant document in the top {k}" if precision is not None else "")
    )


COMMANDS = [calibrate]
