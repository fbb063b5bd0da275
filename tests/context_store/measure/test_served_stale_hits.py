"""The stale-hit rate of what the API served, read from its evidence trails (retrieval_traces)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from assets.freshness import freshness_report as freshness_report_asset
from assets.resources import StoreResource
from context_store._common import utcnow
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.measure.freshness import evaluate_checks, freshness_report
from context_store.measure.stale_hits import served_stale_hits
from context_store.retrieve.result import RetrievalResult
from context_store.retrieve.retriever import Retriever
from context_store.route.confidence import default_confidence
from context_store.route.decision import decide
from context_store.route.traces import record_trace
from context_store.store.context_store import ContextStore
from context_store.store.models import Document

REFUNDS = "company/refunds.md"


def _serve(store: ContextStore, result: RetrievalResult) -> str:
    """What the API does with a response: decide, then record the evidence trail."""
    confidence = default_confidence(result.features)
    return record_trace(store, result, decide(result, confidence, 0.5), confidence_source="default")


def _current_version(store: ContextStore, doc_id: str) -> str:
    with store.session() as session:
        doc = session.get(Document, doc_id)
        assert doc is not None and doc.current_version_id
        return doc.current_version_id


@pytest.fixture
def served(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> dict[str, object]:
    """Three responses around one edit of the refund policy, plus a point-in-time one."""
    ingest(store, fake_embedder)
    retriever = Retriever(store, fake_embedder)
    old_version = _current_version(store, REFUNDS)
    before = retriever.retrieve("refund window days", user_id="u-1", k=5)
    assert any(h.version_id == old_version for h in before.results)
    _serve(store, before)

    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("within 30 days", "within 14 days"))
    ingest(store, fake_embedder)
    superseded = utcnow()
    assert _current_version(store, REFUNDS) != old_version

    # The same response served again after the edit: what a response cache or a replica that
    # lags behind the writer would hand out. The API must count it as stale.
    lagging = replace(before, served_at=utcnow())
    _serve(store, lagging)
    after = retriever.retrieve("refund window days", user_id="u-1", k=5)
    assert all(h.version_id != old_version for h in after.results)
    _serve(store, after)
    # asked for the policy as it was: the old version is the right answer there
    _serve(store, retriever.retrieve("refund window days", k=5, as_of=before.served_at))
    return {"old_version": old_version, "before": before, "lagging": lagging, "after": after, "superseded": superseded}


def test_only_results_served_after_supersession_are_stale(store: ContextStore, served: dict[str, object]) -> None:
    before, after = served["before"], served["after"]
    assert isinstance(before, RetrievalResult) and isinstance(after, RetrievalResult)
    old_chunks = sum(1 for h in before.results if h.version_id == served["old_version"])
    report = served_stale_hits(store)
    assert report.traces == 4 and report.as_of_traces == 1 and not report.capped
    # every chunk and the user's snapshot of the three current-text responses
    assert report.served == 2 * (len(before.results) + 1) + len(after.results) + 1
    assert report.stale == old_chunks and report.unknown == 0
    assert report.rate == pytest.approx(old_chunks / report.served)
    assert {h.version_id for h in report.hits} == {served["old_version"]}
    assert all(h.served_at == served["lagging"].served_at for h in report.hits)  # type: ignore[union-attr]
    assert all(h.key == REFUNDS and h.superseded_at <= h.served_at for h in report.hits)

    earlier = served_stale_hits(store, until=served["superseded"])  # type: ignore[arg-type]
    assert earlier.traces == 1 and earlier.served == len(before.results) + 1 and earlier.stale == 0 and earlier.rate == 0.0


def test_keyset_pages_and_the_cap(store: ContextStore, served: dict[str, object]) -> None:
    whole = served_stale_hits(store)
    paged = served_stale_hits(store, page_size=1)
    assert (paged.traces, paged.served, paged.stale, paged.as_of_traces) == (whole.traces, whole.served, whole.stale, whole.as_of_traces)
    capped = served_stale_hits(store, page_size=1, max_traces=2)
    assert capped.capped and capped.traces == 2 and capped.stale == whole.stale  # the two oldest: before and lagging
    exact = served_stale_hits(store, page_size=2, max_traces=4)
    assert not exact.capped and exact.traces == 4


def test_the_no_stale_hits_check_fails_above_its_threshold(store: ContextStore, served: dict[str, object]) -> None:
    report = freshness_report(store)
    assert report.stale.stale > 0
    outcome = {o.name: o for o in evaluate_checks(report, sla_seconds=300)}["no_stale_hits"]
    assert not outcome.passed and outcome.value == report.stale.rate and outcome.threshold == 0.0
    assert REFUNDS in outcome.detail
    tolerant = {o.name: o for o in evaluate_checks(report, sla_seconds=300, stale_hit_rate_max=report.stale.rate or 0.0)}
    assert tolerant["no_stale_hits"].passed
    assert report.as_dict()["stale_hits"]["stale_hits"] == report.stale.stale


def test_no_served_results_passes(store: ContextStore, fake_embedder: HashingEmbedder) -> None:
    ingest(store, fake_embedder)
    outcome = {o.name: o for o in evaluate_checks(freshness_report(store), sla_seconds=300)}["no_stale_hits"]
    assert outcome.passed and outcome.value is None and "no served results" in outcome.detail


def test_the_asset_plots_the_rate_and_lists_the_hits(store: ContextStore, served: dict[str, object]) -> None:
    store.settings.save()
    result = dg.materialize([freshness_report_asset], resources={"store": StoreResource(home=str(store.settings.home))})
    meta = {k: v.value for k, v in result.asset_materializations_for_node("freshness_report")[-1].metadata.items()}
    report = served_stale_hits(store)
    assert meta["stale_hit_rate"] == pytest.approx(report.rate, abs=1e-3) and isinstance(meta["stale_hit_rate"], float)
    assert meta["served_results"] == report.served and meta["stale_hits"] == report.stale
    assert "| version | doc | served at | superseded at |" in meta["stale_hit_sample"]
    assert served["old_version"] in meta["stale_hit_sample"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["no_stale_hits"] is False

    # a home that tolerates the rate passes (the threshold is configuration)
    store.settings.stale_hit_rate_max = 1.0
    store.settings.save()
    result = dg.materialize([freshness_report_asset], resources={"store": StoreResource(home=str(store.settings.home))})
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["no_stale_hits"] is True


def test_the_support_lead_report_shows_the_rate(store: ContextStore, served: dict[str, object]) -> None:
    from context_store.measure.report import build_report, render_html

    data = build_report(store, days=1)
    report = served_stale_hits(store)
    fresh = data["freshness"]
    assert (fresh["stale_hit_rate"], fresh["served_results"], fresh["stale_hits"]) == (report.rate, report.served, report.stale)
    page = render_html(data)
    assert f'data-key="stale_hit_rate">{report.rate * 100:.2f} %<' in page  # type: ignore[operator]
    assert f"Of {report.served} results the API served, {report.stale} quoted a version already superseded" in page


def test_the_freshness_command_reports_and_checks_the_rate(store: ContextStore, served: dict[str, object]) -> None:
    import json

    from click.testing import CliRunner

    from pipeline.cli import main

    store.settings.save()
    home = str(store.settings.home)
    report = served_stale_hits(store)
    out = CliRunner().invoke(main, ["--home", home, "freshness", "--json", "--check"])
    assert out.exit_code == 1, out.output
    payload = json.loads(out.output)
    assert payload["stale_hits"]["stale_hits"] == report.stale and payload["stale_hits"]["served_results"] == report.served
    assert {c["name"]: c["passed"] for c in payload["checks"]}["no_stale_hits"] is False
    text = CliRunner().invoke(main, ["--home", home, "freshness"])
    assert text.exit_code == 0 and f"{report.stale} of {report.served} served results" in text.output
    assert "[FAIL] no_stale_hits" in text.output
