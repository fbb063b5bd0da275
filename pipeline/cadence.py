"""How often the automation runs: schedules' cron strings and the sensors' minimum interval.

Read from the environment only when the code location loads (``pipeline.definitions.defs``),
never at import, so a test builds definitions with any cadence without touching
``os.environ`` or purging ``sys.modules``:

    FRESHCONTEXT_RECONCILE_CRON   hourly          re-hash every source (the journal can miss events)
    FRESHCONTEXT_REPORT_CRON      every 10 min    the freshness report
    FRESHCONTEXT_COMPACT_CRON     daily 03:30     LanceDB compaction
    FRESHCONTEXT_QUALITY_CRON     hourly at :20   retrieval, routing and learning quality
    FRESHCONTEXT_SENSOR_INTERVAL_S  5             how often the sensors tick
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Cadence"]


@dataclass(frozen=True)
class Cadence:
    reconcile_cron: str = "0 * * * *"
    report_cron: str = "*/10 * * * *"
    compact_cron: str = "30 3 * * *"
    quality_cron: str = "20 * * * *"
    sensor_interval_s: int = 5

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Cadence":
        default = cls()
        return cls(
            reconcile_cron=environ.get("FRESHCONTEXT_RECONCILE_CRON", default.reconcile_cron),
            report_cron=environ.get("FRESHCONTEXT_REPORT_CRON", default.report_cron),
            compact_cron=environ.get("FRESHCONTEXT_COMPACT_CRON", default.compact_cron),
            quality_cron=environ.get("FRESHCONTEXT_QUALITY_CRON", default.quality_cron),
            sensor_interval_s=int(environ.get("FRESHCONTEXT_SENSOR_INTERVAL_S", default.sensor_interval_s)),
        )
