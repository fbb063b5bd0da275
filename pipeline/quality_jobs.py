"""When quality is measured: after every index change (declarative automation) and on a schedule.

``FRESHCONTEXT_QUALITY_CRON`` (default: hourly at :20) sets the schedule. The schedule also
picks up a changed embedding model or chunker in the config file: ``index_candidate``
builds and evaluates the new index, and ``index_promotion`` switches only if the gate passed.
"""

from __future__ import annotations

import os

import dagster as dg

from assets.quality import index_candidate, index_promotion, learning_report, retrieval_quality, routing_quality

__all__ = ["QUALITY_ASSETS", "quality_automation_sensor", "quality_job", "quality_schedule"]

QUALITY_CRON = os.environ.get("FRESHCONTEXT_QUALITY_CRON", "20 * * * *")
QUALITY_ASSETS = [retrieval_quality, index_candidate, index_promotion, routing_quality, learning_report]

quality_job = dg.define_asset_job(
    "quality_job",
    selection=dg.AssetSelection.assets(*QUALITY_ASSETS),
    description="Evaluate retrieval, routing and learning; build, gate and promote a changed index.",
)
quality_schedule = dg.ScheduleDefinition(
    name="quality_schedule", job=quality_job, cron_schedule=QUALITY_CRON, default_status=dg.DefaultScheduleStatus.RUNNING
)
quality_automation_sensor = dg.AutomationConditionSensorDefinition(
    "quality_automation_sensor",
    target=dg.AssetSelection.assets(*QUALITY_ASSETS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Runs the quality assets after every index change (AutomationCondition.eager).",
)
