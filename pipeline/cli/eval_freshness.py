"""``eval freshness``: replay a real documentation history through the warm path and the Dagster path.

Both paths run for real on their own home (SQLite + LanceDB under a work folder), each
watching its own copy of the folder with the watchdog observer:

- **warm**: the watcher journals, the :class:`~pipeline.watcher.WarmApplier` applies in
  this process. Lag = file write → the store shows the new text current and indexed.
- **dagster**: the watcher journals; then the real ``company_change_sensor`` is evaluated
  on a real (temporary, SQLite-backed) Dagster instance and the run it requests is executed
  in-process with ``execute_in_process``. Lag = file write → current and indexed. What this
  leaves out — the daemon's tick interval and a launched run's process start and model
  load — is measured separately (``dagster_run_launch_s``) and added in
  ``lag_dagster_daemon_p95_est_s``.

Beside the warm path's lag, the replay times its embedding floor (unless ``--no-floor``): each
changed file's lag if the warm path did nothing but embed the commit's changed chunks with the
same model object, file after file, cheapest first (``lag_warm_floor_*``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
import dagster as dg

from assets.resources import StoreResource
from context_store.index.embed.factory import build_embedder
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.embed.model_files import MODELS_DIR_ENV
from context_store.index.embed.onnx_backend import OnnxEncoder
from context_store.index.embed.protocol import Embedder
from context_store.index.ingest import ingest
from context_store.measure.replay import FileWrite, History, rounded_percentile, run_replay
from context_store.settings import Settings
from context_store.state import journal
from context_store.store.context_store import ContextStore
from pipeline.cadence import Cadence
from pipeline.cli.eval_cmds import eval_group
from pipeline.definitions import INGEST_ASSETS, INGEST_CHECKS, LEARNING_ASSETS, LEARNING_CHECKS
from pipeline.jobs import company_refresh_job
from pipeline.resources import build_resources
from pipeline.sensors import TAG_RANGE, any_run_going, company_change_sensor
from pipeline.watcher import SourceWatcher, WarmApplier

__all__ = ["DaemonDriver", "DagsterDriver", "WarmDriver", "freshness_eval", "measure_run_launch"]

SOURCE_NAME = "history"


def _open_home(base: Path, model: str | None) -> tuple[Path, ContextStore]:
    root = base / "sources"
    root.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {"company_sources": [{"name": SOURCE_NAME, "path": str(root)}], "user_sources": []}
    if model:
        overrides["embedding"] = {"model": model}
    Settings.load(base / "home", **overrides).save()
    return root, ContextStore.open(base / "home")


class _TimedEmbedder:
    """Counts the seconds spent encoding, so a stage breakdown can tell embedding from the rest."""

    def __init__(self, embedder: Embedder) -> None:
        self.inner = embedder
        self.name = embedder.name
        self.seconds = 0.0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: list[str]) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.encode(texts)
        finally:
            self.seconds += time.perf_counter() - started


class WarmDriver:
    name = "warm"

    def __init__(self, base: Path, embedder: Embedder, model: str | None = None) -> None:
        self.root, self.store = _open_home(base, model)
        self.embedder = _TimedEmbedder(embedder)
        self.watcher: SourceWatcher | None = None
        self.applier: WarmApplier | None = None
        self.applies: list[dict[str, float]] = []
        self._embedded_s = 0.0

    def bootstrap(self) -> None:
        ingest(self.store, self.embedder)
        self._embedded_s = self.embedder.seconds
        self.applier = WarmApplier(self.store, self.embedder, interval_s=0.5, on_apply=self._timed).start()
        self.watcher = SourceWatcher(self.store, on_journal=self.applier.wake).start(rescan=False)
        self.applier.backlog = self.watcher.backlog

    def _timed(self, result: Any) -> None:
        embed = self.embedder.seconds - self._embedded_s
        self._embedded_s = self.embedder.seconds
        index = result.company_index.seconds if result.company_index else 0.0
        self.applies.append({"apply": result.seconds, "index": index, "embed": embed, "version": result.seconds - index})

    def stages(self) -> dict[str, Any]:
        """Per apply of the warm path, p50/p95 seconds of each stage (version = sync + bookkeeping;
        index = chunk + embed + LanceDB commit); optimize runs are off that path, listed apart."""
        out: dict[str, Any] = {"applies": len(self.applies)}
        for stage in ("apply", "version", "index", "embed"):
            values = [a[stage] for a in self.applies]
            out[f"{stage}_p50_s"], out[f"{stage}_p95_s"] = rounded_percentile(values, 50), rounded_percentile(values, 95)
        total = sum(a["apply"] for a in self.applies)
        out["embed_share_of_apply"] = round(sum(a["embed"] for a in self.applies) / total, 3) if total else None
        runs = self.applier.optimizations if self.applier else []
        out["optimize_runs"] = len(runs)
        out["optimize_p50_s"] = rounded_percentile([r["seconds"] for r in runs], 50)
        out["optimize_max_s"] = rounded_percentile([r["seconds"] for r in runs], 100)
        return out

    def active(self, index: int) -> bool:
        return True

    def after_write(self, writes: list[FileWrite], started: float) -> None:
        pass  # the watcher and the applier do it all

    def quiesce(self) -> None:
        pass  # an optimize after 1 s of quiet is the warm path's own background work

    def finish(self) -> None:
        if self.watcher:
            self.watcher.stop()
        if self.applier:
            self.applier.apply_once()
            self.applier.stop()


class _FixedEmbedder:
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def for_store(self, store: ContextStore) -> Embedder:
        return self.embedder


class DagsterDriver:
    name = "dagster"

    def __init__(self, base: Path, embedder: Embedder, *, every: int = 1, start: int = 0, model: str | None = None) -> None:
        self.root, self.store = _open_home(base, model)
        self.home = str(self.store.settings.home)
        self.embedder = embedder
        self.every = max(1, every)
        self.start = start
        (base / "instance").mkdir(exist_ok=True)
        self.instance = dg.DagsterInstance.local_temp(tempdir=str(base / "instance"))
        self.store_resource = StoreResource(home=self.home)
        resources = build_resources(self.home)
        if model is not None:  # a test embedder: hand the runs the very same object
            resources["embedder"] = dg.ResourceDefinition.hardcoded_resource(_FixedEmbedder(embedder))
        defs = dg.Definitions(
            assets=[*INGEST_ASSETS, *LEARNING_ASSETS], asset_checks=[*INGEST_CHECKS, *LEARNING_CHECKS],
            jobs=[company_refresh_job], resources=resources,
        )
        self.job = defs.resolve_job_def("company_refresh_job")
        self.cursor = 0
        self.runs = 0
        self.run_seconds: list[float] = []
        self.watcher: SourceWatcher | None = None
        self._running: threading.Thread | None = None
        self._failure: BaseException | None = None

    def bootstrap(self) -> None:
        ingest(self.store, self.embedder)
        self.watcher = SourceWatcher(self.store).start(rescan=False)
        self.cursor = journal.latest_id(self.store)

    def active(self, index: int) -> bool:
        return (index - self.start) % self.every == 0

    def _wait_journaled(self, paths: set[str], timeout: float = 15.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            seen = {r.path for r in journal.read_after(self.store, self.cursor, state_kind="company")}
            if paths <= seen:
                return
            time.sleep(0.01)

    def tick(self) -> int:
        """One sensor evaluation, and the runs it asks for executed in-process; returns runs."""
        context = dg.build_sensor_context(cursor=str(self.cursor), instance=self.instance, resources={"store": self.store_resource})
        result = company_change_sensor(context)
        requests = result.run_requests if isinstance(result, dg.SensorResult) else []
        for request in requests or []:
            started = time.perf_counter()
            quiet = {**request.run_config, "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            outcome = self.job.execute_in_process(run_config=quiet, instance=self.instance, tags=request.tags)
            self.run_seconds.append(time.perf_counter() - started)
            self.runs += 1
            if outcome.success:  # what journal_settled_sensor does after a successful run
                first, last = (int(x) for x in request.tags[TAG_RANGE].split("-"))
                journal.mark_applied(self.store, by="dagster", state_kind="company", id_range=(first, last))
        if isinstance(result, dg.SensorResult) and result.cursor:
            self.cursor = int(result.cursor)
        return len(requests or [])

    def quiesce(self) -> None:
        self._join()  # the run's tail (the staff-answer review, the drift check) ends before the warm path is measured

    def after_write(self, writes: list[FileWrite], started: float) -> None:
        self._join()
        self._wait_journaled({str((self.root / w.rel_path).resolve()) for w in writes})
        # the run goes on in the background, so the replay sees each of its waves commit, as a
        # reader would; blocking here would date every file of a commit at the run's end
        self._running = threading.Thread(target=self._tick_in_background, name="dagster-run", daemon=True)
        self._running.start()

    def _tick_in_background(self) -> None:
        try:
            self.tick()
        except BaseException as exc:  # re-raised in the replay's thread by _join
            self._failure = exc

    def _join(self) -> None:
        if self._running is not None:
            self._running.join()
            self._running = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def finish(self) -> None:
        self._join()
        if self.watcher:
            self.watcher.stop()
        self.tick()


class DaemonDriver:
    """The Dagster path as deployed: ``freshcontext watch`` (journal only) and ``dagster-daemon
    run`` on this home, each its own process. The daemon ticks the real sensors on its own
    interval and launches real runs (a new process each, the model loaded in it); nothing is
    estimated. Lag = file write → current and indexed, as for the other paths."""

    name = "dagster"
    READY_TIMEOUT_S = 300.0

    def __init__(self, base: Path, embedder: Embedder, *, model: str | None = None) -> None:
        if model is not None:
            raise click.ClickException("the daemon path runs in other processes and needs the real model (not --embedder hashing)")
        self.root, self.store = _open_home(base, None)
        self.home = str(self.store.settings.home)
        self.embedder = embedder
        self.dagster_home = base / "dagster-home"
        self.logs = base / "logs"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._instance: dg.DagsterInstance | None = None

    def bootstrap(self) -> None:
        ingest(self.store, self.embedder)
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        # as `make run` writes it: the queue drained every second, not every 5 s
        (self.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nrun_queue:\n  dequeue_interval_seconds: 1\n")
        self.logs.mkdir(parents=True, exist_ok=True)
        repo = Path(__file__).resolve().parents[2]
        env = {**os.environ, "FRESHCONTEXT_HOME": self.home, "DAGSTER_HOME": str(self.dagster_home), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(repo)}
        if isinstance(self.embedder, OnnxEncoder):  # the export a deployment made at its first ingest, not one per run
            env[MODELS_DIR_ENV] = str(self.embedder.path.parent)
        commands = {
            "watch": [sys.executable, "-m", "pipeline.cli", "--home", self.home, "watch"],
            "daemon": [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(repo / "workspace.yaml")],
        }
        for name, command in commands.items():
            log = (self.logs / f"{name}.log").open("wb")
            self._procs.append(subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        self._instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        deadline = time.time() + self.READY_TIMEOUT_S
        while time.time() < deadline:  # the sensor daemon has loaded the code location and ticked
            self._check_alive()
            beats = self._instance.get_daemon_heartbeats()
            if "SENSOR" in beats and "watching" in (self.logs / "watch.log").read_text(errors="replace"):
                break
            time.sleep(0.5)
        else:
            raise click.ClickException(f"dagster-daemon or the watcher did not start in {self.READY_TIMEOUT_S:.0f} s; see {self.logs}")
        self._settle()

    def _check_alive(self) -> None:
        for proc in self._procs:
            if proc.poll() is not None:
                raise click.ClickException(f"{proc.args[0]} exited with {proc.returncode}; see {self.logs}")

    def _settle(self, timeout: float = 600.0) -> None:
        """Until the journal is applied and no run is going (so the next path is measured on a quiet machine)."""
        deadline = time.time() + timeout
        quiet_since: float | None = None
        while time.time() < deadline:
            self._check_alive()
            assert self._instance is not None
            if any_run_going(self._instance):
                quiet_since = None
            else:
                quiet_since = quiet_since or time.time()
                # rows a run never marks (nothing to do for them) must not hold the replay: two
                # sensor intervals without a run is settled too
                if not journal.read_after(self.store, 0, unapplied_only=True, limit=1) or time.time() - quiet_since > 2 * _sensor_interval_s() + 2:
                    return
            time.sleep(0.5)

    def active(self, index: int) -> bool:
        return True

    def after_write(self, writes: list[FileWrite], started: float) -> None:
        pass  # the watcher journals, the daemon's sensor tick launches the run

    def quiesce(self) -> None:
        self._settle()

    def finish(self) -> None:
        try:
            self._settle()
        finally:
            for proc in self._procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in self._procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def _sensor_interval_s() -> int:
    """The interval the sensors of a code location loaded now would tick at (the environment's cadence)."""
    return Cadence.from_env(os.environ).sensor_interval_s


def measure_run_launch(home: Path) -> float:
    """Seconds a launched Dagster run pays before its first step: a new Python process that
    imports the code location and loads the embedding model (what ``execute_in_process`` skips).
    ``home``'s exported model, if any, is the one the run loads."""
    code = (
        "import sys\n"
        "import pipeline.definitions\n"
        "from context_store.index.embed.factory import build_embedder\n"
        "from context_store.settings import Settings\n"
        "settings = Settings.load(sys.argv[1])\n"
        "build_embedder(settings.embedding, settings.home).encode(['warm up'])\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(home)], check=True, cwd=str(Path(__file__).resolve().parents[2]), capture_output=True)
    return time.perf_counter() - started


def _drivers(base: Path, embedder_name: str, *, dagster: bool, dagster_daemon: bool, dagster_every: int, start: int) -> tuple[Embedder, list[Any]]:
    """The embedder every path shares, and the warm driver followed by the Dagster one (if any)."""
    model = None
    if embedder_name == "hashing":
        embedder: Embedder = HashingEmbedder(dim=128)
        model = embedder.name
    else:
        embedder = build_embedder(Settings.load(base / "probe-settings").embedding, base / "probe-settings")
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
        "dagster_sensor_interval_s": _sensor_interval_s() if dag else None,
        "dagster_mode": ("daemon" if dagster_daemon else "in-process") if dag else None,
        "lag_dagster_daemon_p95_est_s": (
            round(dag["lag_p95_s"] + launch + _sensor_interval_s(), 2) if dag and dag["lag_p95_s"] is not None and launch is not None else None
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
