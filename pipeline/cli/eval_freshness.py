"""``eval freshness``: replay a real documentation history through the warm path and the Dagster path.

The paths are the drivers in :mod:`pipeline.cli.replay_drivers`; the replay itself is
``context_store.measure.replay.run_replay``. For the in-process Dagster path, the daemon's
tick interval and a launched run's start (``dagster_run_launch_s``) are added in
``lag_dagster_daemon_p95_est_s``.

Beside the warm path's lag, the replay times its embedding floor (unless ``--no-floor``): each
changed file's lag if the warm path did nothing but embed the commit's changed chunks with the
same model object, file after file, cheapest first (``lag_warm_floor_*``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from context_store.index import Embedder, HashingEmbedder, OnnxEncoder, build_embedder
from context_store.measure import History, run_replay
from context_store.settings import Settings
from pipeline.cli.eval_cmds import eval_group
from pipeline.cli.replay_drivers import (
    SOURCE_NAME,
    DaemonDriver,
    DagsterDriver,
    WarmDriver,
    measure_run_launch,
    sensor_interval_s,
)

__all__ = ["freshness_eval"]


def _drivers(base: Path, embedder_name: str, *, dagster: bool, dagster_daemon: bool, dagster_every: int, start: int) -> tuple[Embedder, list[Any]]:
    """The embedder every path shares, and the warm driver followed by the Dagster one (if any)."""
    model = None
    if embedder_name == "hashing":
        embedder: Embedder = HashingEmbedder(dim=128)
        model = embedder.name
    else:
        embedder = build_embedder(Settings.load(base / "probe-settings").embedding, base / "probe-settings")
        if isinstance(embedder, OnnxEncoder):
            # One thread count for the whole replay. Chosen per call from the load average, the
            # warm path's encode and its floor's, timed seconds apart, can run on 2 and 1 threads
            # when the load crosses 1.5 x cores between them (two runs starting at load 3.1 and
            # 4.7 had every warm encode of a commit 1.5-1.7x slower than the floor's, by chance).
            embedder.pin_threads()
    drivers: list[Any] = [WarmDriver(base / "warm", embedder, model)]
    if dagster and dagster_daemon:
        drivers.append(DaemonDriver(base / "dagster", embedder, model=model))
    elif dagster:
        drivers.append(DagsterDriver(base / "dagster", embedder, every=dagster_every, start=start, model=model))
    return embedder, drivers


def _lag_keys(report: dict[str, Any], launch: float | None, dagster_daemon: bool) -> dict[str, Any]:
    """The lag figures of both paths, the warm path's embedding floor and the Dagster path's launch estimate."""
    warm = report["drivers"]["warm"]
    dag = report["drivers"].get("dagster")
    warm_floor = report["embed_floor"] or {}
    return {
        "lag_warm_p50_s": warm["lag_p50_s"],
        "lag_warm_p95_s": warm["lag_p95_s"],
        "lag_warm_max_s": warm["lag_max_s"],
        "lag_warm_small_commits_p95_s": warm["small_commit_lag_p95_s"],
        "lag_warm_per_commit_p95_s": warm["commit_lag_p95_s"],
        "lag_warm_floor_p50_s": warm_floor.get("lag_p50_s"),
        "lag_warm_floor_p95_s": warm_floor.get("lag_p95_s"),
        "lag_warm_floor_max_s": warm_floor.get("lag_max_s"),
        "lag_warm_floor_per_commit_p95_s": warm_floor.get("per_commit_p95_s"),
        "lag_dagster_p50_s": dag["lag_p50_s"] if dag else None,
        "lag_dagster_p95_s": dag["lag_p95_s"] if dag else None,
        "lag_dagster_max_s": dag["lag_max_s"] if dag else None,
        "lag_dagster_small_commits_p95_s": dag["small_commit_lag_p95_s"] if dag else None,
        "lag_dagster_per_commit_p95_s": dag["commit_lag_p95_s"] if dag else None,
        "dagster_run_launch_s": round(launch, 2) if launch is not None else None,
        "dagster_sensor_interval_s": sensor_interval_s() if dag else None,
        "dagster_mode": ("daemon" if dagster_daemon else "in-process") if dag else None,
        "lag_dagster_daemon_p95_est_s": (
            round(dag["lag_p95_s"] + launch + sensor_interval_s(), 2) if dag and dag["lag_p95_s"] is not None and launch is not None else None
        ),
    }


def _summary(report: dict[str, Any], drivers: list[Any], embedder: Embedder, launch: float | None, dagster_daemon: bool) -> dict[str, Any]:
    """One flat object of the replay's figures (the ``--json`` output)."""
    totals = report["drivers"].values()
    dag = report["drivers"].get("dagster")
    summary: dict[str, Any] = {
        "commits": report["commits"],
        "probes": sum(d["probes"] for d in totals),
        "stale_hits": sum(d["stale_hits"] for d in totals),
        "misses": sum(d["misses"] for d in totals),
        **_lag_keys(report, launch, dagster_daemon),
        "chunks_embedded": report["drivers"]["warm"]["chunks_embedded"],
        "chunks_changed": report["chunks_changed"],
        "chunks_embedded_dagster": dag["chunks_embedded"] if dag else None,
        "files_changed": report["files_changed"],
        "timeouts": sum(d["timeouts"] for d in totals),
        "final_state_matches_history": report["final_state_matches_history"],
        "warm_and_dagster_identical": report["drivers_identical"],
        "bootstrap_commits": report["bootstrap_commits"],
        "bootstrap_seconds": report["bootstrap_seconds"],
        "history": report["history"],
        "embedder": embedder.name,
        "seconds": report["seconds"],
        "warm_stages": drivers[0].stages(),
        "drivers": report["drivers"],
        "embed_floor": report["embed_floor"],
    }
    if dag:
        runs = drivers[1]
        summary["dagster_runs"] = runs.runs if isinstance(runs, DagsterDriver) else None
    return summary


def freshness_eval(
    history_dir: str | Path,
    *,
    commits: int | None = None,
    start: int | None = None,
    dagster: bool = True,
    dagster_every: int = 1,
    dagster_daemon: bool = False,
    probes_per_commit: int = 4,
    k: int = 10,
    workdir: str | Path | None = None,
    embedder_name: str = "model",
    measure_launch: bool = True,
    progress: Any = None,
    floor: bool = True,
) -> dict[str, Any]:
    """Run the replay and return one flat summary (the ``--json`` object)."""
    history = History(history_dir)
    if start is None:
        start = max(0, len(history) - commits) if commits else 0
    start = min(max(0, start), len(history))
    own_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix="freshness-replay-")) if own_dir else Path(workdir)  # type: ignore[arg-type]
    base.mkdir(parents=True, exist_ok=True)
    embedder, drivers = _drivers(base, embedder_name, dagster=dagster, dagster_daemon=dagster_daemon, dagster_every=dagster_every, start=start)
    try:
        report = run_replay(
            history, drivers, embedder=embedder, settings=drivers[0].store.settings, source_name=SOURCE_NAME,
            start=start, commits=commits, probes_per_commit=probes_per_commit, k=k, progress=progress,
            floor_for=WarmDriver.name if floor else None,  # the warm driver embeds with this very embedder
        )
        launch = measure_run_launch(base / "probe-settings") if dagster and not dagster_daemon and measure_launch and embedder_name != "hashing" else None
    finally:
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
    return _summary(report, drivers, embedder, launch, dagster_daemon)


def _fmt(value: Any, unit: str = "") -> str:
    return "—" if value is None else f"{value}{unit}"


@eval_group.command("freshness")
@click.option("--history", "history_dir", required=True, type=click.Path(exists=True, file_okay=False), help="A folder with changes.jsonl and blobs.jsonl.gz.")
@click.option("--commits", type=click.IntRange(min=1), default=None, help="Replay this many commits (default: all).")
@click.option("--start", type=click.IntRange(min=0), default=None, help="Commits applied in bulk first, unmeasured (default: all but the last --commits).")
@click.option("--no-dagster", is_flag=True, help="Measure only the warm path.")
@click.option("--daemon", "dagster_daemon", is_flag=True, help="Measure the Dagster path as deployed: `freshcontext watch` and `dagster-daemon run` as their own processes, runs launched by the daemon (no estimate).")
@click.option("--dagster-every", type=click.IntRange(min=1), default=1, show_default=True, help="Measure the Dagster path on every K-th commit (others are batched into the next run).")
@click.option("--probes-per-commit", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--k", type=click.IntRange(1, 100), default=10, show_default=True, help="A changed document must be in the top k.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="Keep the homes here (default: a temporary folder, removed).")
@click.option("--embedder", "embedder_name", type=click.Choice(["model", "hashing"]), default="model", hidden=True)
@click.option("--no-floor", is_flag=True, help="Skip the warm path's embedding floor (timed between commits, outside every lag).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def freshness(
    history_dir: str, commits: int | None, start: int | None, no_dagster: bool, dagster_daemon: bool, dagster_every: int,
    probes_per_commit: int, k: int, workdir: str | None, embedder_name: str, no_floor: bool, as_json: bool,
) -> None:
    """Replay a history through the real pipeline; report stale hits, misses and lag."""
    from context_store.errors import FreshContextError

    def progress(done: int, total: int, stats: dict[str, Any]) -> None:
        if done == total or done % 10 == 0:
            warm = stats.get("warm", {})
            click.echo(
                f"  {done}/{total} commits · warm p95 {_fmt(warm.get('lag_p95_s'), ' s')} · "
                f"stale {sum(s['stale_hits'] for s in stats.values())} · misses {sum(s['misses'] for s in stats.values())}",
                err=True,
            )

    try:
        summary = freshness_eval(
            history_dir, commits=commits, start=start, dagster=not no_dagster, dagster_every=dagster_every, dagster_daemon=dagster_daemon,
            probes_per_commit=probes_per_commit, k=k, workdir=workdir, embedder_name=embedder_name, progress=progress,
            floor=not no_floor,
        )
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    s = summary
    click.echo(f"history: {s['history']} ({s['bootstrap_commits']} commits bootstrapped, {s['commits']} replayed, {s['files_changed']} file changes)")
    click.echo(f"probes: {s['probes']}   stale hits: {s['stale_hits']} (goal 0)   misses (not in top {k}): {s['misses']}")
    click.echo(
        f"warm path lag:    p50 {_fmt(s['lag_warm_p50_s'], ' s')}   p95 {_fmt(s['lag_warm_p95_s'], ' s')}   max {_fmt(s['lag_warm_max_s'], ' s')}   "
        f"(commits of ≤ 3 files: p95 {_fmt(s['lag_warm_small_commits_p95_s'], ' s')}; goal p95 ≤ 2 s)"
    )
    if s["lag_warm_floor_p95_s"] is not None:
        click.echo(
            f"  embedding floor: p50 {_fmt(s['lag_warm_floor_p50_s'], ' s')}   p95 {_fmt(s['lag_warm_floor_p95_s'], ' s')}   "
            f"max {_fmt(s['lag_warm_floor_max_s'], ' s')}   (the same files' lag if the warm path only embedded the changed "
            f"chunks, file after file, cheapest first, same model)"
        )
    if s["lag_dagster_p95_s"] is not None and s["dagster_mode"] == "daemon":
        click.echo(
            f"dagster path lag: p50 {_fmt(s['lag_dagster_p50_s'], ' s')}   p95 {_fmt(s['lag_dagster_p95_s'], ' s')}   "
            f"(under dagster-daemon, runs launched as deployed; goal ≤ 30 s)"
        )
    elif s["lag_dagster_p95_s"] is not None:
        click.echo(
            f"dagster path lag: p50 {_fmt(s['lag_dagster_p50_s'], ' s')}   p95 {_fmt(s['lag_dagster_p95_s'], ' s')}   "
            f"(in-process runs; + tick ≤ {s['dagster_sensor_interval_s']} s + launch {_fmt(s['dagster_run_launch_s'], ' s')} "
            f"≈ p95 {_fmt(s['lag_dagster_daemon_p95_est_s'], ' s')} under the daemon; goal ≤ 30 s)"
        )
    click.echo(f"chunks embedded: {s['chunks_embedded']}   chunks whose text changed: {s['chunks_changed']}")
    click.echo(
        f"final state matches history: {s['final_state_matches_history']}   "
        f"warm and dagster identical: {_fmt(s['warm_and_dagster_identical'])}   timeouts: {s['timeouts']}"
    )
    click.echo(f"total time: {s['seconds']} s")


COMMANDS: list[click.Command] = []
