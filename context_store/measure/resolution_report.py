"""The report's resolution section: the scorecard as tiles, a plot per day, and a table (``report.render_html`` calls these)."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

__all__ = ["resolution_figure", "resolution_html", "resolution_tiles"]

_ROWS = (  # (key, label, how to show it)
    ("task_success_rate", "task success", "pct"),
    ("first_contact_resolution", "first-contact resolution", "pct"),
    ("repeat_contact_rate", "repeat contact", "pct"),
    ("reopen_rate", "reopened", "pct"),
    ("time_to_resolve_p50_s", "time to resolve p50", "dur"),
    ("time_to_resolve_p95_s", "time to resolve p95", "dur"),
    ("escalation_success_rate", "escalation success (staff answered, then resolved)", "pct"),
    ("owner_assignment_rate", "routed questions with an owner", "pct"),
    ("confidence_outcome_gap", "confidence-outcome gap (ECE of served confidence)", "num"),
)


def _show(value: Any, how: str) -> str:
    if value is None:
        return "—"
    if how == "pct":
        return f"{value * 100:.1f} %"
    if how == "dur":
        return f"{value / 3600:.1f} h" if value >= 3600 else f"{value / 60:.1f} min" if value >= 60 else f"{value:.1f} s"
    return f"{value:.3f}"


def resolution_tiles(section: dict[str, Any], tile: Callable[[str, str, str], str]) -> list[str]:
    """The headline tiles, each with ``data-key="resolution.<metric>"``."""
    keys = ("task_success_rate", "first_contact_resolution", "repeat_contact_rate", "confidence_outcome_gap")
    return [tile(f"resolution.{key}", label, _show(section.get(key), how)) for key, label, how in _ROWS if key in keys]


def resolution_figure(plt: Any, section: dict[str, Any]) -> Any:
    """Per day: task success, first-contact resolution and repeat contact (lines), the confidence gap (dashed)."""
    fig, ax = plt.subplots(figsize=(7, 3))
    days = [d for d in section["daily"] if d["responses"]]
    if not any(d["responses_with_outcome"] for d in days):
        ax.text(0.5, 0.5, "no outcomes reported in this window (POST /v1/outcomes)", ha="center", va="center",
                transform=ax.transAxes, color="#777")
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    xs = [d["day"][5:] for d in days]
    for key, label, style in (("task_success_rate", "task success", "-o"), ("first_contact_resolution", "first-contact resolution", "-s"),
                              ("repeat_contact_rate", "repeat contact", "-^"), ("confidence_outcome_gap", "confidence gap (ECE)", "--x")):
        ax.plot(xs, [float("nan") if d[key] is None else d[key] for d in days], style, ms=4, label=label)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of responses")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def resolution_html(section: dict[str, Any], image: str) -> str:
    """The "Did users get what they needed?" section: the numbers over the window, the plot, and outcomes by kind."""
    rows = "".join(f'<tr><td>{html.escape(label)}</td><td data-key="resolution.{key}">{html.escape(_show(section.get(key), how))}</td></tr>'
                   for key, label, how in _ROWS)
    kinds = ", ".join(f"{html.escape(k)} {n}" for k, n in section["outcomes_by_kind"].items()) or "none yet"
    return (
        '<h2 id="resolution">Did users get what they needed?</h2>'
        f"<p>{section['responses']} responses, {section['responses_with_outcome']} with a reported or derived outcome "
        f"({section['outcomes']} outcomes: {kinds}). Resolved means resolved without a repeat contact, reopen or request for a person.</p>"
        f'<table class="scorecard"><thead><tr><th>over the window</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>'
        f"{image}"
    )
