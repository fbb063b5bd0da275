"""``eval retrieval``: nDCG/Recall/MRR and calibration error of every retrieval mode on a BEIR set.

The corpus is ingested into a fresh home through the real pipeline (the Dagster ingest
assets), then every mode ranks every judged query in the same run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from context_store.errors import FreshContextError
from context_store.index import build_query_encoder
from context_store.measure import BeirDataset, evaluate_retrieval, load_beir, write_corpus
from context_store.retrieve import MODES, DenseIndex, Retriever
from context_store.route import CALIBRATOR_FILE, load_calibrator
from context_store.settings import Settings
from context_store.store import ContextStore
from pipeline.cli.eval_cmds import eval_group

__all__ = ["beir_home", "load_dataset", "retriever_for"]


def load_dataset(beir_dir: Path) -> BeirDataset:
    try:
        return load_beir(beir_dir)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def beir_home(dataset: BeirDataset, work_home: Path | None, *, mode: str | None = None) -> Iterator[Path]:
    """A fresh home holding the corpus, ingested by the Dagster ingest assets; removed afterwards unless given."""
    from pipeline.runner import materialize_ingest

    home = work_home or Path(tempfile.mkdtemp(prefix="freshcontext-beir-"))
    try:
        source = home / "sources" / "beir"
        if source.exists():
            shutil.rmtree(source)  # the folder must hold exactly this corpus
        written = write_corpus(dataset, source)
        # Shipped retrieval defaults (plus the mode asked for), whatever a reused work home saved earlier.
        overrides: dict[str, Any] = {"company_sources": [{"name": "beir", "path": str(source)}], "retrieval": {"mode": mode} if mode else {}}
        Settings.load(home, **overrides).save()
        click.echo(f"ingesting {written} documents of {dataset.name} into {home} ...", err=True)
        result = materialize_ingest(str(home), trigger="eval")
        if not result.success:
            raise click.ClickException(f"ingest of {dataset.name} failed; see the Dagster events above")
        yield home
    finally:
        if work_home is None:
            shutil.rmtree(home, ignore_errors=True)


def retriever_for(home: Path, model_home: Path) -> Retriever:
    store = ContextStore.open(home)
    config = store.settings.retrieval
    # The query encoder the service would use; its ONNX export is kept in the caller's home.
    encoder = build_query_encoder(store.settings.embedding, config.query_encoder, model_home, cache_size=100_000)
    return Retriever(store, encoder, dense=DenseIndex.from_config(store.index, store.settings.retrieval, ann="exact", refresh_interval=3600))


@eval_group.command("retrieval")
@click.option("--beir", "beir_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="BEIR folder: corpus.jsonl, queries.jsonl, qrels.tsv.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 100), help="Cut-off for nDCG/Recall/MRR and for the calibration outcome.")
@click.option("--mode", type=click.Choice(MODES), default=None, help="The default mode to report (default: the configured one).")
@click.option("--max-queries", type=click.IntRange(1), default=None, help="Evaluate only the first N judged queries.")
@click.option("--work-home", type=click.Path(file_okay=False, path_type=Path), default=None, help="Ingest here and keep it (default: a temporary home, removed after).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def retrieval(ctx: click.Context, beir_dir: Path, k: int, mode: str | None, max_queries: int | None, work_home: Path | None, as_json: bool) -> None:
    """Ingest a BEIR corpus into a fresh home and score every retrieval mode on its queries."""
    dataset = load_dataset(beir_dir)
    if max_queries:
        keep = list(dataset.judged_queries())[:max_queries]
        dataset.queries = {q: dataset.queries[q] for q in keep}
    home: Path = ctx.obj["home"]
    try:
        calibrator = load_calibrator(home / CALIBRATOR_FILE)
        with beir_home(dataset, work_home) as eval_home:
            retriever = retriever_for(eval_home, home)
            with click.progressbar(length=len(dataset.judged_queries()) * (len(MODES)), label="ranking", file=click.get_text_stream("stderr")) as bar:
                report = evaluate_retrieval(retriever, dataset, k=k, default_mode=mode, calibrator=calibrator, progress=bar.update)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{dataset.name}: {report['queries']} queries, default mode {report['mode']}, confidence: {report['confidence']}")
    header = f"{'mode':<8} {'nDCG@' + str(k):>9} {'R@' + str(k):>7} {'R@100':>7} {'MRR@' + str(k):>8} {'ECE':>6} {'ECE(cv)':>8} {'ms/q':>6}"
    click.echo(header)
    for name, row in report["by_mode"].items():
        cv = row["ece_crossfit"]
        click.echo(
            f"{name:<8} {row[f'ndcg@{k}']:>9.4f} {row[f'recall@{k}']:>7.4f} {row['recall@100']:>7.4f} {row[f'mrr@{k}']:>8.4f} "
            f"{row['ece']:>6.3f} {('%.3f' % cv) if cv is not None else '-':>8} {row['ms_per_query']:>6.1f}"
        )


COMMANDS: list[click.Command] = []  # ``retrieval`` is registered on the ``eval`` group above
