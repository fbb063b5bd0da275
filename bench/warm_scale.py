"""How the warm path's cost of a one-file change grows with the corpus it lands in.

Two homes in one run, a small corpus (``--small`` documents) and a large one (``--large``), each
ingested once. Then, alternating between them, one document is edited, journaled and applied by
``WarmApplier.apply_once`` (version the journaled file, chunk it, embed what changed, replace its
LanceDB rows, record it in SQL), ``--edits`` times each. The embedder is the hashing fake: what
the model costs for one changed chunk does not depend on the corpus (``bench/freshness.py``
measures it with the real model); this measures what is ours.

Prints, per size, the median and p95 of the whole apply and of its LanceDB commit, and
``large_vs_small``, the ratio of the medians: a warm path whose work follows the change and not
the corpus keeps it near 1.

Usage: python bench/warm_scale.py [--small 200] [--large 20000] [--edits 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from context_store._common import percentile
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.index.warm import WarmApplier
from context_store.state import journal
from context_store.store import vector_index
from context_store.store.context_store import ContextStore

SECTIONS = 50


def _article(i: int, edit: int = 0) -> str:
    return (
        f"# Article {i}\n\n## Setup\n\nStep {i}: open Settings, then Integrations, and paste the key "
        f"for workspace {i}. Revision {edit}.\n\n## Troubleshooting\n\nIf events for site {i} do not "
        "appear within a minute, check the script tag and the domain spelling.\n"
    )


class _Home:
    """A corpus of ``n`` articles, ingested, and a warm applier on it."""

    def __init__(self, root: Path, n: int, embedder: HashingEmbedder) -> None:
        self.n = n
        self.company = root / "company"
        for i in range(n):
            folder = self.company / f"section-{i % SECTIONS}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"article-{i}.md").write_text(_article(i))
        self.store = ContextStore.open(root / "home", company_sources=[{"name": "company", "path": str(self.company)}], user_sources=[])
        began = time.perf_counter()
        self.rows = ingest(self.store, embedder).company_index.rows_in_table  # type: ignore[union-attr]
        self.ingest_s = time.perf_counter() - began
        self.applier = WarmApplier(self.store, embedder)
        self.apply_s: list[float] = []
        self.commit_s: list[float] = []

    def edit_and_apply(self, edit: int, commits: list[float]) -> None:
        path = self.company / "section-7" / "article-7.md"
        path.write_text(_article(7, edit))
        journal.append(self.store, [journal.entry_for_path(self.store.settings, path)])
        commits.clear()
        began = time.perf_counter()
        result = self.applier.apply_once()
        self.apply_s.append(time.perf_counter() - began)
        self.commit_s.append(sum(commits))
        if result.company is None or result.company.changed != 1:
            raise SystemExit(f"the edit was not applied: {result}")

    def summary(self, warmup: int) -> dict[str, object]:
        apply_s, commit_s = self.apply_s[warmup:], self.commit_s[warmup:]
        return {
            "documents": self.n, "rows": self.rows, "ingest_s": round(self.ingest_s, 2),
            "apply_median_ms": _ms(statistics.median(apply_s)), "apply_p95_ms": _ms(percentile(apply_s, 95)),
            "lancedb_commit_median_ms": _ms(statistics.median(commit_s)), "lancedb_commit_p95_ms": _ms(percentile(commit_s, 95)),
        }


def _ms(seconds: float | None) -> float:
    assert seconds is not None
    return round(seconds * 1000, 2)


def _timed_replace(commits: list[float]) -> Callable[..., None]:
    """Time every LanceDB replace of a wave (with opening its table), as the writer thread runs it;
    returns the untimed one, for ``main`` to put back."""
    real = vector_index.VectorIndex._replace

    def timed(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        began = time.perf_counter()
        try:
            return real(self, *args, **kwargs)
        finally:
            commits.append(time.perf_counter() - began)

    vector_index.VectorIndex._replace = timed  # type: ignore[method-assign]
    return real


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=200, help="documents in the small corpus (default 200)")
    parser.add_argument("--large", type=int, default=20_000, help="documents in the large corpus (default 20,000)")
    parser.add_argument("--edits", type=int, default=15, help="one-file edits applied per corpus, alternating (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="first edits per corpus left out of the figures (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.edits <= args.warmup:
        parser.error("--edits must be larger than --warmup")
    embedder = HashingEmbedder()
    commits: list[float] = []
    untimed = _timed_replace(commits)
    try:
        with tempfile.TemporaryDirectory(prefix="freshcontext-warm-scale-") as tmp:
            homes = []
            for n in (args.small, args.large):
                print(f"ingesting {n:,} documents ...", file=sys.stderr, flush=True)
                homes.append(_Home(Path(tmp) / f"corpus-{n}", n, embedder))
            for edit in range(1, args.edits + 1):
                for home in homes:
                    home.edit_and_apply(edit, commits)
            small, large = (home.summary(args.warmup) for home in homes)
    finally:
        vector_index.VectorIndex._replace = untimed  # type: ignore[method-assign]
    out = {
        "small": small, "large": large,
        "large_vs_small": round(float(large["apply_median_ms"]) / float(small["apply_median_ms"]), 2),  # type: ignore[arg-type]
        "lancedb_commit_large_vs_small": round(
            float(large["lancedb_commit_median_ms"]) / float(small["lancedb_commit_median_ms"]), 2  # type: ignore[arg-type]
        ),
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'corpus':>10} {'LanceDB rows':>13} {'apply p50':>10} {'apply p95':>10} {'commit p50':>11} {'commit p95':>11}")
    for row in (small, large):
        print(f"{row['documents']:>10,} {row['rows']:>13,} {row['apply_median_ms']:>8} ms {row['apply_p95_ms']:>8} ms"
              f" {row['lancedb_commit_median_ms']:>9} ms {row['lancedb_commit_p95_ms']:>9} ms")
    print(f"large_vs_small (apply medians): {out['large_vs_small']}; LanceDB commit: {out['lancedb_commit_large_vs_small']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
