"""What the unobserved-change scan costs: stat every configured source file, compare with what the syncs saw.

    python bench/unobserved_scan.py [--files 10000] [--repeat 5] [--json]

Builds a throw-away home with ``--files`` small help articles in 100 folders, versions them
once (``sync_company_sources``: that records what the pipeline observed; nothing is
embedded), then changes, adds and removes a few files behind the pipeline's back and times
``state.unobserved_changes`` — the scan ``freshcontext status``, ``freshcontext freshness``
and the ``freshness_report`` asset run. Goal: under 1 s at 10,000 files. Prints the median
and the worst of ``--repeat`` scans, what they found, and the load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from context_store.state import sync_company_sources, unobserved_changes  # noqa: E402
from context_store.store.context_store import ContextStore  # noqa: E402

GOAL_S = 1.0


def _build(root: Path, files: int) -> list[Path]:
    folders = 100
    paths = []
    for i in range(files):
        folder = root / f"section-{i % folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"article-{i:05d}.md"
        path.write_text(f"# Article {i}\n\nHow to do thing {i}: open Settings, then step {i % 7}.\n", encoding="utf-8")
        paths.append(path)
    return paths


def run(files: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="fc-unobserved-") as tmp:
        company = Path(tmp) / "company"
        paths = _build(company, files)
        store = ContextStore.open(Path(tmp) / "home", company_sources=[{"name": "company", "path": str(company)}])
        started = time.perf_counter()
        sync_company_sources(store)
        sync_s = time.perf_counter() - started
        # behind the pipeline's back: 3 edits, 2 new files, 1 deletion
        for path in paths[:3]:
            path.write_text(path.read_text(encoding="utf-8") + "\nEdited.\n", encoding="utf-8")
        for i in range(2):
            (company / "section-000" / f"new-{i}.md").write_text("# New\n\nAdded unseen.\n", encoding="utf-8")
        paths[-1].unlink()
        load_before = os.getloadavg()
        times, report = [], None
        for _ in range(repeat):
            report = unobserved_changes(store)
            times.append(report.seconds)
        load_after = os.getloadavg()
        assert report is not None
        found = report.as_dict()["sources"][0]
        return {
            "files": report.files, "repeat": repeat, "scan_median_s": round(statistics.median(times), 4),
            "scan_max_s": round(max(times), 4), "goal_s": GOAL_S, "within_goal": max(times) < GOAL_S,
            "found": {k: found[k] for k in ("changed", "added", "removed")}, "first_sync_s": round(sync_s, 2),
            "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in load_after],
            "cores": os.cpu_count(),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    s = run(args.files, args.repeat)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(
        f"unobserved-change scan of {s['files']:,} files: median {s['scan_median_s']:.3f} s, worst {s['scan_max_s']:.3f} s "
        f"of {s['repeat']} (goal < {GOAL_S:g} s: {'met' if s['within_goal'] else 'MISSED'}); found {s['found']}; "
        f"load avg {s['load_avg_before'][0]:.1f} on {s['cores']} cores"
    )
    return 0 if s["within_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
