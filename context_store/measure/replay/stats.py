"""What a replay reports per driver: lag percentiles, stale hits, misses, chunks embedded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from context_store._common import percentile

__all__ = ["SMALL_COMMIT", "DriverStats", "rounded_percentile"]

# Lag is also reported for commits touching at most this many files: one person's edit, as
# opposed to a bulk reformat whose hundreds of chunks take seconds of embedding on any path.
SMALL_COMMIT = 3


def rounded_percentile(values: list[float], q: float) -> float | None:
    """The replay's percentile (``_common.percentile``), rounded to the millisecond for its reports."""
    value = percentile(values, q)
    return None if value is None else round(value, 3)


@dataclass
class DriverStats:
    name: str
    commits: int = 0
    lags: list[float] = field(default_factory=list)
    small_commit_lags: list[float] = field(default_factory=list)  # commits touching ≤ SMALL_COMMIT files
    commit_lags: list[float] = field(default_factory=list)  # per commit: until its last file was done
    timeouts: int = 0
    probes: int = 0
    stale_hits: int = 0
    misses: int = 0
    chunks_embedded: int = 0
    stale_examples: list[dict[str, Any]] = field(default_factory=list)
    miss_examples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "commits_measured": self.commits,
            "changes_measured": len(self.lags),
            "lag_p50_s": rounded_percentile(self.lags, 50),
            "lag_p95_s": rounded_percentile(self.lags, 95),
            "lag_max_s": round(max(self.lags), 3) if self.lags else None,
            "commit_lag_p50_s": rounded_percentile(self.commit_lags, 50),
            "commit_lag_p95_s": rounded_percentile(self.commit_lags, 95),
            "small_commit_changes": len(self.small_commit_lags),
            "small_commit_lag_p50_s": rounded_percentile(self.small_commit_lags, 50),
            "small_commit_lag_p95_s": rounded_percentile(self.small_commit_lags, 95),
            "timeouts": self.timeouts,
            "probes": self.probes,
            "stale_hits": self.stale_hits,
            "misses": self.misses,
            "chunks_embedded": self.chunks_embedded,
            "stale_examples": self.stale_examples[:5],
            "miss_examples": self.miss_examples[:5],
        }
