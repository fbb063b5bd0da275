"""The history replay on a small synthetic history: ground truth, probes, both paths, a lazy driver, the embedding floor."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from context_store.errors import ConfigError
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.measure.replay import EmbedFloor, FileWrite, History, chunk_texts, probe_queries, run_replay
from context_store.settings import Settings
from context_store.store.context_store import ContextStore
from pipeline.cli import main
from pipeline.cli.eval_freshness import freshness_eval
from pipeline.cli.replay_drivers import WarmDriver

TEXTS = {
    "b-goals-1": "# Goals\n\nTrack goal conversions from the settings page of your site.\n\n## Custom events\n\nSend custom events with the JavaScript snippet.\n",
    "b-goals-2": "# Goals\n\nTrack goal conversions from the goals section of the site settings.\n\n## Custom events\n\nSend custom events with the JavaScript snippet.\n",
    "b-billing-1": "# Billing\n\nInvoices are emailed on the first day of every month to the account owner.\n",
    "b-api-1": "# Stats API\n\nThe stats API returns aggregate visitor numbers for any date range you request.\n",
}


def write_history(root: Path, commits: list[list[dict[str, object]]], blobs: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "changes.jsonl").open("w") as fh:
        for i, changes in enumerate(commits):
            fh.write(json.dumps({"sha": f"{i:040d}", "date": "2024-01-01T00:00:00Z", "subject": f"c{i}", "changes": changes}) + "\n")
    with gzip.open(root / "blobs.jsonl.gz", "wt") as fh:
        for blob, text in blobs.items():
            fh.write(json.dumps({"blob": blob, "text": text}) + "\n")
    return root


@pytest.fixture
def history(tmp_path: Path) -> Path:
    A = lambda p, b: {"status": "A", "path": p, "old_path": None, "blob": b}  # noqa: E731
    return write_history(
        tmp_path / "history",
        [
            [A("docs/goals.md", "b-goals-1"), A("docs/billing.md", "b-billing-1"), A("docs/logo.png", "b-png")],
            [{"status": "M", "path": "docs/goals.md", "old_path": None, "blob": "b-goals-2"}],
            [A("docs/api.md", "b-api-1")],
            [{"status": "R", "path": "docs/payments.md", "old_path": "docs/billing.md", "blob": "b-billing-1"}],
            [{"status": "D", "path": "docs/api.md", "old_path": None, "blob": None}],
        ],
        TEXTS,  # b-png is not carried: a binary file
    )


def test_probe_queries_take_added_and_removed_lines() -> None:
    added, removed = probe_queries(TEXTS["b-goals-1"], TEXTS["b-goals-2"])
    assert added == "Track goal conversions from the goals section of the site settings."
    assert removed == "Track goal conversions from the settings page of your site."
    assert probe_queries(None, "---\ntitle: a long front matter title that is not text\n---\n# X\n\nshort\n") == (None, None)


def test_a_folder_without_history_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="changes.jsonl"):
        History(tmp_path)


def test_replay_through_warm_and_dagster_paths(history: Path, tmp_path: Path) -> None:
    report = freshness_eval(history, start=1, embedder_name="hashing", workdir=tmp_path / "work")
    assert report["commits"] == 4 and report["bootstrap_commits"] == 1
    assert report["stale_hits"] == 0 and report["misses"] == 0 and report["probes"] > 0
    assert report["timeouts"] == 0
    assert report["chunks_embedded"] == report["chunks_changed"] == report["chunks_embedded_dagster"]
    assert report["chunks_changed"] == 2  # goals' first paragraph, the API page; the rename embeds nothing
    assert report["final_state_matches_history"] and report["warm_and_dagster_identical"]
    assert report["lag_warm_p95_s"] is not None and report["lag_dagster_p95_s"] is not None
    assert report["dagster_runs"] == 4
    # the floor: the same files as the warm lag, the same chunks embedded
    assert report["embed_floor"]["changes_measured"] == report["drivers"]["warm"]["changes_measured"] == 5  # the rename: two
    assert report["embed_floor"]["chunks"] == report["chunks_changed"]
    assert report["lag_warm_floor_p95_s"] is not None and report["lag_warm_floor_per_commit_p95_s"] is not None


class LazyDriver:
    """A path that never applies anything after the bootstrap: the judge must notice."""

    name = "lazy"

    def __init__(self, base: Path, embedder: HashingEmbedder) -> None:
        self.root = base / "sources"
        self.root.mkdir(parents=True)
        self.store = ContextStore.open(base / "home", company_sources=[{"name": "history", "path": str(self.root)}])
        self.embedder = embedder

    def bootstrap(self) -> None:
        ingest(self.store, self.embedder)

    def active(self, index: int) -> bool:
        return True

    def after_write(self, writes: list[FileWrite], started: float) -> None:
        pass

    def quiesce(self) -> None:
        pass

    def finish(self) -> None:
        pass


def test_a_store_that_falls_behind_shows_stale_hits_misses_and_timeouts(history: Path, tmp_path: Path) -> None:
    embedder = HashingEmbedder(dim=128)
    driver = LazyDriver(tmp_path / "lazy", embedder)
    report = run_replay(
        History(history), [driver], embedder=embedder, settings=Settings.load(tmp_path / "s"), source_name="history",
        start=1, commits=None, timeout_s=0.3,
    )
    lazy = report["drivers"]["lazy"]
    assert lazy["stale_hits"] > 0 and lazy["misses"] > 0 and lazy["timeouts"] > 0
    assert report["final_state_matches_history"] is False
    assert report["missing_blobs"] == 1  # the png: its change is skipped, not fatal


class RecordingEmbedder(HashingEmbedder):
    """Keeps every batch it encodes; ``delay_s`` per text makes encode time measurable."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(dim=128)
        self.delay_s = delay_s
        self.batches: list[list[str]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        time.sleep(self.delay_s * len(texts))
        return super().encode(texts)


class WarmAfterBootstrap(WarmDriver):
    """The warm path, its embedder's record starting after the bootstrap ingest."""

    def __init__(self, base: Path, embedder: RecordingEmbedder) -> None:
        super().__init__(base, embedder, embedder.name)
        self.recorder = embedder

    def bootstrap(self) -> None:
        super().bootstrap()
        self.recorder.batches.clear()


def test_the_floor_embeds_exactly_the_texts_the_warm_path_embedded(history: Path, tmp_path: Path) -> None:
    pipeline, floor = RecordingEmbedder(), RecordingEmbedder(delay_s=0.01)
    driver = WarmAfterBootstrap(tmp_path / "warm", pipeline)
    report = run_replay(
        History(history), [driver], embedder=floor, settings=driver.store.settings, source_name="history",
        start=1, commits=None, probes_per_commit=0, floor_for="warm",  # no probes: the floor's embedder encodes only the floor
    )
    embedded = sorted(t for batch in pipeline.batches for t in batch)
    assert embedded and sorted(t for batch in floor.batches for t in batch) == embedded
    assert report["embed_floor"]["chunks"] == floor.texts_embedded == report["chunks_changed"] == 2
    assert report["embed_floor"]["changes_measured"] == report["drivers"]["warm"]["changes_measured"] == 5  # the rename: two
    # goals' edit and the API page embed one chunk each; the rename and the deletion embed nothing
    assert report["embed_floor"]["lag_max_s"] >= 0.01 and report["embed_floor"]["lag_p50_s"] < 0.01


def test_a_change_outside_every_chunk_has_floor_zero(tmp_path: Path) -> None:
    blobs = {"b-billing-1": TEXTS["b-billing-1"], "b-billing-blank": TEXTS["b-billing-1"] + "\n\n\n"}
    history = write_history(
        tmp_path / "history",
        [
            [{"status": "A", "path": "docs/billing.md", "old_path": None, "blob": "b-billing-1"}],
            [{"status": "M", "path": "docs/billing.md", "old_path": None, "blob": "b-billing-blank"}],
        ],
        blobs,
    )
    floor = RecordingEmbedder(delay_s=0.01)
    driver = WarmDriver(tmp_path / "warm", HashingEmbedder(dim=128), "hashing-test-embedder")
    report = run_replay(
        History(history), [driver], embedder=floor, settings=driver.store.settings, source_name="history",
        start=1, commits=None, probes_per_commit=0, floor_for="warm",
    )
    assert report["drivers"]["warm"]["changes_measured"] == 1 and report["chunks_changed"] == 0
    assert report["embed_floor"] == {
        "changes_measured": 1, "lag_p50_s": 0.0, "lag_p95_s": 0.0, "lag_max_s": 0.0, "per_commit_p95_s": 0.0, "seconds": 0.0, "chunks": 0,
    }
    assert floor.batches == []


def test_the_floor_embeds_file_after_file_cheapest_first_and_accumulates(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path / "s")
    goals = chunk_texts(settings, "history/goals.md", "goals.md", TEXTS["b-goals-1"])  # two chunks
    billing = chunk_texts(settings, "history/billing.md", "billing.md", TEXTS["b-billing-1"])  # one, shorter
    assert len(goals) == 2 and len(billing) == 1
    embedder = RecordingEmbedder(delay_s=0.02)
    floors = EmbedFloor().measure(embedder, {"history/goals.md": goals, "history/billing.md": billing, "history/gone.md": {}})
    cheapest_first = [floors["history/gone.md"], floors["history/billing.md"], floors["history/goals.md"]]
    assert cheapest_first == sorted(cheapest_first) and cheapest_first[0] == 0.0
    assert floors["history/goals.md"] > floors["history/billing.md"] >= 0.02
    assert floors["history/goals.md"] >= 0.06  # its own two texts after billing's one: the wait adds up
    assert embedder.batches == [list(billing.values()), list(goals.values())]  # one encode per file
    assert all(t.startswith("Goals") for t in goals.values())  # the embedded text carries the heading trail


def test_no_floor_leaves_the_floor_keys_null(history: Path, tmp_path: Path) -> None:
    args = ["eval", "freshness", "--history", str(history), "--start", "1", "--no-dagster", "--embedder", "hashing"]
    skipped = CliRunner().invoke(main, [*args, "--no-floor", "--json", "--workdir", str(tmp_path / "a")])
    assert skipped.exit_code == 0, skipped.output
    summary = json.loads(skipped.stdout)
    assert summary["embed_floor"] is None and summary["lag_warm_p95_s"] is not None
    assert all(summary[f"lag_warm_floor_{key}_s"] is None for key in ("p50", "p95", "max", "per_commit_p95"))
    printed = CliRunner().invoke(main, [*args, "--workdir", str(tmp_path / "b")])
    assert printed.exit_code == 0, printed.output
    assert "embedding floor: p50 " in printed.stdout and "cheapest first, same model" in printed.stdout
