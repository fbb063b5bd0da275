"""The history replay on a small synthetic history: ground truth, probes, both paths, a lazy driver."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from context_store.embedding import HashingEmbedder
from context_store.errors import ConfigError
from context_store.ingest import ingest
from context_store.replay import FileWrite, History, probe_queries, run_replay
from context_store.settings import Settings
from context_store.store import ContextStore
from pipeline.cli.eval_freshness import freshness_eval

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
