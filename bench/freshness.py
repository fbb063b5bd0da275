"""Freshness benchmark: replay the Plausible docs history through the warm path and the Dagster path.

    python bench/freshness.py [--history DIR] [--commits 100] [--dagster-every 1] [--no-floor] [--device auto|cpu|cuda] [--json]

Prints, from one run on the real model, side by side: lag p50/p95 for the warm path
(goal p95 ≤ 2 s, file write → retrievable) and the Dagster sensor path (goal ≤ 30 s),
stale hits (goal 0), misses, and re-embedded versus changed chunks (goal equal); beside the
warm path, its embedding floor: the lag if it only embedded the changed chunks, cheapest file first.
``--device`` sets ``embedding.device`` (default: the configured default, auto); with
``--no-dagster`` nothing imports Dagster, so the replay runs where it is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from context_store.index.embed.device import resolve_device  # noqa: E402
from context_store.settings import EMBEDDING_DEVICE_ENV  # noqa: E402
from pipeline.cli.eval_freshness import freshness_eval  # noqa: E402

DEFAULT_HISTORY = REPO.parent / "shared" / "data" / "plausible_docs_history"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", default=str(DEFAULT_HISTORY))
    parser.add_argument("--commits", type=int, default=100, help="the most recent N commits are replayed, the rest bootstrapped")
    parser.add_argument("--dagster-every", type=int, default=1)
    parser.add_argument("--no-dagster", action="store_true")
    parser.add_argument("--daemon", action="store_true",
                        help="measure the Dagster path under a real dagster-daemon with `freshcontext watch` beside it (runs launched as deployed)")
    parser.add_argument("--no-floor", action="store_true", help="skip timing the warm path's embedding floor between commits")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="embedding.device for the replay's model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.device:
        os.environ[EMBEDDING_DEVICE_ENV] = args.device  # the replay's settings, and any process it starts, read it
    if not Path(args.history, "changes.jsonl").is_file():
        print(f"no history at {args.history} (needs ../shared/data)", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    s = freshness_eval(args.history, commits=args.commits, dagster=not args.no_dagster, dagster_every=args.dagster_every, dagster_daemon=args.daemon,
                       floor=not args.no_floor)
    load = os.getloadavg()
    # the lag depends on how busy the machine was: keep the load beside the numbers
    s["load_avg_before"], s["load_avg_after"], s["cores"] = [round(x, 2) for x in load_before], [round(x, 2) for x in load], os.cpu_count()
    s["device"] = resolve_device(os.environ.get(EMBEDDING_DEVICE_ENV, "auto"))
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    print(f"freshness replay: {s['commits']} commits ({s['files_changed']} file changes) after {s['bootstrap_commits']} bootstrapped; "
          f"load avg {load[0]:.1f} on {os.cpu_count()} cores")
    print("lag = file write -> current and indexed; per file change, per commit (its last file), and for commits of <= 3 files")
    print(f"{'path':<9}{'p50':>8}{'p95':>8}{'max':>8}{'commit p50':>11}{'commit p95':>11}{'small p50':>10}{'small p95':>10}"
          f"{'goal p95':>9}{'probes':>7}{'stale':>6}{'misses':>7}")
    for name, goal in (("warm", 2.0), ("dagster", 30.0)):
        d = s["drivers"].get(name)
        if d:
            label = "daemon" if name == "dagster" and s["dagster_mode"] == "daemon" else name
            print(f"{label:<9}{d['lag_p50_s']:>8}{d['lag_p95_s']:>8}{d['lag_max_s']:>8}{d['commit_lag_p50_s']:>11}{d['commit_lag_p95_s']:>11}"
                  f"{d['small_commit_lag_p50_s']!s:>10}{d['small_commit_lag_p95_s']!s:>10}{goal:>9}{d['probes']:>7}{d['stale_hits']:>6}{d['misses']:>7}")
        if name == "warm" and s["lag_warm_floor_p95_s"] is not None:
            print(f"{' floor':<9}{s['lag_warm_floor_p50_s']:>8}{s['lag_warm_floor_p95_s']:>8}{s['lag_warm_floor_max_s']:>8}{'':>11}"
                  f"{s['lag_warm_floor_per_commit_p95_s']:>11}   (warm: only embedding the changed chunks, cheapest file first, same model)")
    if s["lag_dagster_daemon_p95_est_s"] is not None:
        print(f"dagster under the daemon (estimate): in-process p95 {s['lag_dagster_p95_s']} s + tick ≤ {s['dagster_sensor_interval_s']} s "
              f"+ run launch {s['dagster_run_launch_s']} s = {s['lag_dagster_daemon_p95_est_s']} s")
    st = s["warm_stages"]
    print(f"warm stages per apply ({st['applies']} applies), p50/p95 s: apply {st['apply_p50_s']}/{st['apply_p95_s']}, "
          f"version {st['version_p50_s']}/{st['version_p95_s']}, index {st['index_p50_s']}/{st['index_p95_s']} "
          f"(embedding {st['embed_p50_s']}/{st['embed_p95_s']}, {st['embed_share_of_apply']} of apply time); "
          f"off the path: {st['optimize_runs']} optimize runs, p50 {st['optimize_p50_s']} s, max {st['optimize_max_s']} s")
    ratio = s["chunks_embedded"] / s["chunks_changed"] if s["chunks_changed"] else float("nan")
    print(f"chunks embedded {s['chunks_embedded']} / chunks changed {s['chunks_changed']} = {ratio:.3f} (goal 1.000)")
    print(f"final state matches history: {s['final_state_matches_history']}; warm and dagster identical: {s['warm_and_dagster_identical']}")
    print(f"total {s['seconds']} s (bootstrap {s['bootstrap_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
