"""The support leads' report: one self-contained HTML page with plots, and the same numbers as JSON.

Everything comes from history the system keeps anyway: ``version_lags`` (lag over time),
``evaluation_runs`` (retrieval and routing quality over time), ``retrieval_traces``
(escalation rate and reasons, per day), staff answers (time to knowledge) and the promotion
decisions. ``build_report`` collects the numbers; ``render_html`` draws them with
matplotlib (PNG, inlined as base64, so the page is one file that works offline).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select

from context_store._common import percentile, utcnow
from context_store.measure.freshness import freshness_report
from context_store.measure.gate import pending_change
from context_store.measure.quality import history
from context_store.measure.resolution import resolution_scorecard
from context_store.measure.resolution_report import resolution_figure, resolution_html, resolution_tiles
from context_store.store.context_store import ContextStore
from context_store.store.models import EvaluationRun, PromotionDecision, RetrievalTrace, StaffAnswer, VersionLag

__all__ = ["build_report", "render_html"]

HEADLINE_METRICS = ("ndcg@10", "recall@10", "mrr@10", "answer_changed_current_wins")


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _lag_series(store: ContextStore, since: datetime) -> dict[str, Any]:
    with store.session() as session:
        rows = session.exec(
            select(VersionLag.state_kind, VersionLag.committed_at, VersionLag.lag_seconds)
            .where(VersionLag.backfill == False, col(VersionLag.committed_at) >= since)  # noqa: E712
            .order_by(VersionLag.committed_at)
        ).all()
    points: dict[str, list[dict[str, Any]]] = defaultdict(list)
    daily: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for kind, committed, lag in rows:
        points[kind].append({"at": _iso(committed), "lag_s": round(float(lag), 3)})
        daily[kind][committed.date().isoformat()].append(float(lag))
    return {
        "points": dict(points),
        "daily": {kind: [{"day": d, "p50_s": percentile(v, 50), "p95_s": percentile(v, 95), "versions": len(v)} for d, v in sorted(days.items())]
                  for kind, days in daily.items()},
    }


def _quality_series(runs: list[EvaluationRun]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        out[r.set_name].append({"at": _iso(r.created_at), "passed": r.passed, "fingerprint": r.index_fingerprint,
                                **{k: v for k, v in r.metrics.items() if k in (*HEADLINE_METRICS, "recall@5", "ece", "escalation_precision",
                                                                             "escalation_recall", "coverage_at_target", "escalation_rate")}})
    return dict(out)


def _escalations(store: ContextStore, since: datetime) -> dict[str, Any]:
    with store.session() as session:
        rows = session.exec(
            select(RetrievalTrace.created_at, RetrievalTrace.decision, RetrievalTrace.reasons)
            .where(col(RetrievalTrace.created_at) >= since, col(RetrievalTrace.as_of).is_(None))
        ).all()
    per_day: dict[str, Counter] = defaultdict(Counter)
    reasons: Counter = Counter()
    for created, decision, why in rows:
        per_day[created.date().isoformat()][decision] += 1
        if decision == "escalate":
            reasons.update({r.get("code", "?") for r in why or []})
    total = len(rows)
    escalated = sum(c["escalate"] for c in per_day.values())
    return {
        "requests": total, "escalations": escalated, "escalation_rate": (escalated / total) if total else None,
        "reasons": dict(reasons.most_common()),
        "daily": [{"day": d, "requests": sum(c.values()), "escalations": c["escalate"],
                   "escalation_rate": c["escalate"] / sum(c.values())} for d, c in sorted(per_day.items())],
    }


def _time_to_knowledge(store: ContextStore, since: datetime) -> dict[str, Any]:
    answer_model = StaffAnswer
    with store.session() as session:
        rows = session.exec(
            select(answer_model.received_at, answer_model.retrievable_at, answer_model.needs_review)
            .where(col(answer_model.received_at) >= since)
        ).all()
    points = [{"at": _iso(rec), "seconds": (ret - rec).total_seconds()} for rec, ret, _ in rows if rec is not None and ret is not None]
    values = [p["seconds"] for p in points]
    return {"answers": len(rows), "retrievable": len(points), "pending": len(rows) - len(points),
            "flagged_stale": sum(1 for _, _, flagged in rows if flagged),
            "p50_s": percentile(values, 50), "p95_s": percentile(values, 95), "points": points}


def build_report(store: ContextStore, *, days: float = 30.0, now: datetime | None = None) -> dict[str, Any]:
    """Every number of the report, JSON-ready."""
    now = now or utcnow()
    since = now - timedelta(days=days)
    fresh = freshness_report(store, now=now, window_hours=days * 24)
    retrieval_runs = history(store, "retrieval", since=since)
    routing_runs = history(store, "routing", since=since)
    latest: dict[str, EvaluationRun] = {}
    for r in retrieval_runs:
        latest[r.set_name] = r
    with store.session() as session:
        decisions = session.exec(select(PromotionDecision).order_by(col(PromotionDecision.id).desc()).limit(10)).all()
    deployment = store.deployment
    pending = pending_change(store)
    pending_decision = next((d.decision for d in decisions if d.candidate_fingerprint == pending), None) if pending else None
    return {
        "generated_at": now.isoformat(), "window_days": days, "home": str(store.settings.home),
        "index": {
            "serving_fingerprint": deployment.fingerprint if deployment else store.settings.index_code_version(),
            "model": store.settings.embedding.model, "chunking": store.settings.chunking.fingerprint(),
            "pending_candidate": pending,
            "pending_candidate_last_decision": pending_decision,
            "decisions": [{"at": _iso(d.decided_at), "decision": d.decision, "candidate": d.candidate_fingerprint,
                           "live": d.live_fingerprint, "reason": d.reason} for d in decisions],
        },
        "freshness": {
            **fresh.headline(),
            "sla_seconds": store.settings.freshness_sla_seconds, "stale_hit_rate_max": store.settings.stale_hit_rate_max,
            **_lag_series(store, since),
        },
        "retrieval_quality": {
            "latest": {name: {"at": _iso(r.created_at), "passed": r.passed, "metrics": r.metrics,
                              "worst": (r.details or {}).get("worst", [])} for name, r in latest.items()},
            "series": _quality_series(retrieval_runs),
        },
        "routing_quality": {"series": _quality_series(routing_runs),
                            "latest": {r.set_name: r.metrics for r in routing_runs}},
        "escalations": _escalations(store, since),
        "time_to_knowledge": _time_to_knowledge(store, since),
        "resolution": resolution_scorecard(store, days=days, now=now),
    }


# --- HTML -----------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def _lag_plot(plt: Any, freshness: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3))
    points = freshness["points"]
    if any(points.values()):
        for kind, pts in points.items():
            ax.plot([_parse(p["at"]) for p in pts], [p["lag_s"] for p in pts], "o", ms=3, alpha=0.6, label=f"{kind} versions")
        ax.axhline(freshness["sla_seconds"], color="crimson", ls="--", lw=1, label="SLA")
        ax.set_ylabel("lag (s): source change → retrievable")
        ax.set_yscale("symlog", linthresh=1)
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
    else:
        _empty(ax, "no indexed changes measured in this window")
    return _png(fig)


def _quality_plot(plt: Any, series: dict[str, list[dict[str, Any]]]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3))
    if series:
        for name, rows in series.items():
            xs = [_parse(r["at"]) for r in rows]
            for metric, style in (("ndcg@10", "-o"), ("mrr@10", "--s"), ("answer_changed_current_wins", ":^")):
                ys = [r.get(metric) for r in rows]
                if any(y is not None for y in ys):
                    ax.plot(xs, [float("nan") if y is None else y for y in ys], style, ms=3, label=f"{name} {metric}")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score")
        ax.legend(fontsize=7, loc="lower left")
        fig.autofmt_xdate()
    else:
        _empty(ax, "no retrieval evaluations yet")
    return _png(fig)


def _escalation_plot(plt: Any, esc: dict[str, Any]) -> str:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
    if esc["daily"]:
        ax1.bar([d["day"][5:] for d in esc["daily"]], [d["escalation_rate"] for d in esc["daily"]], color="#d98c1f")
        ax1.set_ylim(0, 1)
        ax1.set_ylabel("escalation rate")
        ax1.tick_params(axis="x", labelrotation=45, labelsize=7)
    else:
        _empty(ax1, "no retrieval requests yet")
    if esc["reasons"]:
        reasons = list(esc["reasons"].items())[:8]
        ax2.barh([r for r, _ in reasons][::-1], [n for _, n in reasons][::-1], color="#5b7db1")
        ax2.set_xlabel("escalations")
    else:
        _empty(ax2, "no escalations")
    fig.tight_layout()
    return _png(fig)


def _ttk_plot(plt: Any, ttk: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3))
    if ttk:
        ax.plot([_parse(p["at"]) for p in ttk], [p["seconds"] for p in ttk], "o", ms=4, color="#2a9d8f")
        ax.set_ylabel("staff reply → retrievable (s)")
        fig.autofmt_xdate()
    else:
        _empty(ax, "no staff answers in this window")
    return _png(fig)


def _plots(data: dict[str, Any]) -> dict[str, str]:
    """The five figures as base64 PNGs, keyed as the page places them."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return {
        "lag": _lag_plot(plt, data["freshness"]),
        "quality": _quality_plot(plt, data["retrieval_quality"]["series"]),
        "escalations": _escalation_plot(plt, data["escalations"]),
        "ttk": _ttk_plot(plt, data["time_to_knowledge"]["points"]),
        "resolution": _png(resolution_figure(plt, data["resolution"])),
    }


def _fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tile(key: str, label: str, value: str) -> str:
    return f'<div class="tile"><div class="v" data-key="{key}">{html.escape(value)}</div><div class="l">{html.escape(label)}</div></div>'


def _percent(rate: float | None, digits: int) -> str:
    return _fmt(rate * 100 if rate is not None else None, " %", digits)


def _tiles(data: dict[str, Any]) -> str:
    """The headline numbers, each with a ``data-key``; one tile per golden set's headline metrics."""
    f, esc, ttk = data["freshness"], data["escalations"], data["time_to_knowledge"]
    tiles = [
        _tile("company_lag_p95_s", "company lag p95", _fmt(f["company_lag_p95_s"], " s", 1)),
        _tile("unindexed_changes", "changes not yet retrievable", _fmt(f["unindexed_changes"])),
        _tile("unobserved_changes", "source changes nobody observed yet", _fmt(f["unobserved_changes"])),
        _tile("stale_hit_rate", "served results whose source had changed", _percent(f["stale_hit_rate"], 2)),
        _tile("stale_exposed_minutes_max", "longest stale exposure of one document", _fmt(f["stale_exposed_minutes_max"], " min", 1)),
        _tile("escalation_rate", "escalation rate", _percent(esc["escalation_rate"], 1)),
        _tile("time_to_knowledge_p50_s", "time to knowledge p50", _fmt(ttk["p50_s"], " s", 1)),
        *resolution_tiles(data["resolution"], _tile),
    ]
    for name, latest in data["retrieval_quality"]["latest"].items():
        m = latest["metrics"]
        tiles.append(_tile(f"{name}.ndcg@10", f"{name}: nDCG@10", _fmt(m.get("ndcg@10"))))
        if "answer_changed_current_wins" in m:
            tiles.append(_tile(f"{name}.answer_changed_current_wins", f"{name}: current answer wins", _fmt(m["answer_changed_current_wins"] * 100, " %", 0)))
    for name, m in data["routing_quality"]["latest"].items():
        if "escalation_recall" in m:
            tiles.append(_tile(f"{name}.escalation_recall", f"{name}: unanswerable questions escalated", _fmt(m["escalation_recall"] * 100, " %", 0)))
            tiles.append(_tile(f"{name}.routing_ece", f"{name}: routing calibration error (ECE)", _fmt(m.get("ece"))))
    return "".join(tiles)


def _worst_html(data: dict[str, Any]) -> str:
    out = ""
    for name, latest in data["retrieval_quality"]["latest"].items():
        if latest["worst"]:
            out += f"<h3>Worst questions — {html.escape(name)}</h3>" + _table(
                ["question", "expected", "came back (top 3)", "rank of expected"],
                [[w["question"], ", ".join(w["expected"]), ", ".join(w["returned"]), w["rank_of_first_expected"] or "not in top 10"]
                 for w in latest["worst"][:10]],
            )
    return out


def _exposure_html(f: dict[str, Any]) -> str:
    """How long users were served each document's old text after its source changed."""
    if not f["stale_exposure"]:
        return ""
    return "<h3>How long were users exposed?</h3>" + _table(
        ["document", "stale results", "source changed", "last served stale", "exposed (min)"],
        [[e["key"], e["hits"], e["changed_at"][:19], e["last_served"][:19], e["exposed_minutes"]] for e in f["stale_exposure"]],
    )


def _pending_html(idx: dict[str, Any]) -> str:
    if not idx["pending_candidate"]:
        return ""
    state = ("was rejected by the promotion gate (see below); the current index keeps serving"
             if idx.get("pending_candidate_last_decision") == "rejected" else "waits for the promotion gate")
    return f'<p class="warn">A new index ({html.escape(idx["pending_candidate"])}) is configured and {state}.</p>'


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: 4px; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.tile { border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.tile .v { font-size: 24px; font-weight: 600; } .tile .l { color: #666; font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 12px; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid #eee; padding: 4px 6px; text-align: left; vertical-align: top; }
img { max-width: 100%; } .warn { background: #fff4e0; padding: 8px; border-radius: 6px; }
"""


def render_html(data: dict[str, Any]) -> str:
    """One self-contained page; every headline number carries ``data-key`` so tools (and tests) can find it."""
    plots = _plots(data)
    f, esc, ttk, idx = data["freshness"], data["escalations"], data["time_to_knowledge"], data["index"]
    decisions = _table(["when", "decision", "candidate", "live", "why"],
                       [[d["at"][:19], d["decision"], d["candidate"], d["live"], d["reason"]] for d in idx["decisions"]]) if idx["decisions"] else "<p>No promotion decisions yet.</p>"
    reasons = _table(["reason", "escalations"], [[r, n] for r, n in esc["reasons"].items()]) if esc["reasons"] else ""

    def img(key: str, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{plots[key]}">'

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>freshcontext quality report</title>
<style>{_CSS}</style></head><body>
<h1>freshcontext — quality report</h1>
<p class="sub">Generated {html.escape(data["generated_at"][:19])} UTC for the last {data["window_days"]:g} days ·
serving index <code>{html.escape(idx["serving_fingerprint"])}</code> ({html.escape(idx["model"])}, {html.escape(idx["chunking"])})</p>
{_pending_html(idx)}
<div class="tiles">{_tiles(data)}</div>
{resolution_html(data["resolution"], img("resolution", "task success, first-contact resolution, repeat contact and confidence gap per day"))}
<h2>How stale is the context?</h2>
<p>Lag from a source change to being retrievable, per indexed version (SLA {f["sla_seconds"]:g} s).
p50 {_fmt(f["company_lag_p50_s"], " s", 1)}, p95 {_fmt(f["company_lag_p95_s"], " s", 1)} over {f["versions_measured"]} versions;
{f["users_past_max_age"]} users' state past its maximum age.
Of {f["served_results"]} results the API served, {f["stale_hits"]} quoted a version already superseded at its source when served,
whether or not the pipeline knew yet (stale-hit rate {_percent(f["stale_hit_rate"], 2)}; allowed {f["stale_hit_rate_max"] * 100:g} %{f"; only the first {f['responses_read']:,} responses measured" if f["stale_hits_capped"] else ""}).
{f["unobserved_changes"]} changes in the sources have not been observed by any watcher or sync yet{f" (the oldest {_fmt(f['unobserved_oldest_age_s'], ' s', 0)} ago)" if f["unobserved_changes"] else ""}.</p>
{_exposure_html(f)}
{img("lag", "lag over time")}
<h2>Is retrieval right?</h2>
<p>nDCG@10, MRR@10 and — for questions whose answer changed — how often the current answer wins over the superseded one, per golden set and evaluation.</p>
{img("quality", "retrieval quality over time")}
{_worst_html(data)}
<h2>When do we hand over to a person, and why?</h2>
<p>{esc["requests"]} requests, {esc["escalations"]} escalated ({_percent(esc["escalation_rate"], 1)}).</p>
{img("escalations", "escalation rate and reasons")}
{reasons}
<h2>How fast do staff answers become knowledge?</h2>
<p>{ttk["answers"]} staff answers; time from reply to retrievable p50 {_fmt(ttk["p50_s"], " s", 1)}, p95 {_fmt(ttk["p95_s"], " s", 1)};
{ttk.get("flagged_stale", 0)} flagged because a source they relied on changed.</p>
{img("ttk", "time to knowledge")}
<h2>Index promotions</h2>
{decisions}
<script type="application/json" id="report-data">{html.escape(json.dumps(_strip_points(data)), quote=False)}</script>
</body></html>
"""


def _strip_points(data: dict[str, Any]) -> dict[str, Any]:
    # the embedded copy keeps the summary; the full series are in the JSON output
    out = json.loads(json.dumps(data, default=str))
    out["freshness"].pop("points", None)
    out["time_to_knowledge"].pop("points", None)
    return out
