"""Turning core reports into Dagster metadata people read in the UI."""

from __future__ import annotations

from typing import Any

import dagster as dg

__all__ = ["md_table", "metric_value", "skipped_table"]


def metric_value(value: Any) -> float:
    """A number Dagster plots across materializations; NaN keeps "no data" apart from a real 0."""
    return float("nan") if value is None else round(float(value), 4)


def md_table(headers: list[str], rows: list[list[Any]], limit: int = 20) -> dg.MetadataValue:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")[:160]

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n… and {len(rows) - limit} more")
    return dg.MetadataValue.md("\n".join(lines))


def skipped_table(skipped: list[dict[str, str]]) -> dg.MetadataValue:
    if not skipped:
        return dg.MetadataValue.md("_nothing skipped_")
    return md_table(["path", "reason", "detail"], [[s["path"], s["reason"], s["detail"]] for s in skipped])
