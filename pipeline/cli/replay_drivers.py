"""The two paths ``eval freshness`` replays a history through, each on its own home.

Both paths run for real on their own home (SQLite + LanceDB under a work folder), each
watching its own copy of the folder with the watchdog observer:

- **warm** (:class:`WarmDriver`): the watcher journals, the :class:`~context_store.index.warm.WarmApplier`
  applies in this process. Lag = file write → the store shows the new text current and indexed.
- **dagster** (:class:`DagsterDriver`): the watcher journals; then the real
  ``company_change_sensor`` is evaluated on a real (temporary, SQLite-backed) Dagster instance
  and the run it requests is executed in-process with ``execute_in_process``. What this leaves
  out — the daemon's tick interval and a launched run's process start and model load — is
  measured separately (:func:`measure_run_launch`).
- **dagster, as deployed** (:class:`DaemonDriver`): ``freshcontext watch`` and
  ``dagster-daemon run`` as their own processes; nothing is estimated.

Each implements ``context_store.measure.replay.ReplayDriver``. Dagster and the pipeline's
definitions are imported by the Dagster drivers alone, so the warm path replays where Dagster
is not installed, as on a GPU server (``bench/gpu_check.sh``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from context_store.index import MODELS_DIR_ENV, Embedder, OnnxEncoder, WarmApplier, ingest
from context_store.measure import FileWrite, rounded_percentile
from context_store.settings import Settings
from context_store.state import journal
from context_store.store import ContextStore
from pipeline.cadence import Cadence
from pipeline.supervisor import stoppable_children
from pipeline.watcher import SourceWatcher

__all__ = ["SOURCE_NAME", "DaemonDriver", "DagsterDriver", "WarmDriver", "measure_run_launch", "sensor_interval_s"]

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
        # the optimize the applier would start after 1 s of quiet, run now: left to its timer it
        # fell inside the embedding floor's timing (a slower floor) or the next commit's apply
        # (a slower warm lag), by chance; it is off the path from write to retrievable either way
        if self.applier:
            self.applier.optimize()

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
        import dagster as dg

        from assets.resources import StoreResource
        from pipeline.definitions import INGEST_ASSETS, INGEST_CHECKS, LEARNING_ASSETS, LEARNING_CHECKS
        from pipeline.jobs import company_refresh_job
        from pipeline.resources import build_resources

        stoppable_children()  # its in-process runs stop their log tails with SIGTERM
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
        import dagster as dg

        from pipeline.sensors import TAG_RANGE, company_change_sensor

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
        self._instance: Any = None  # a dagster.DagsterInstance once bootstrapped

    def bootstrap(self) -> None:
        import dagster as dg

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
        from pipeline.sensors import any_run_going

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
                if not journal.read_after(self.store, 0, unapplied_only=True, limit=1) or time.time() - quiet_since > 2 * sensor_interval_s() + 2:
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


def sensor_interval_s() -> int:
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
