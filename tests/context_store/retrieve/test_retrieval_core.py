"""Fusion, confidence, decision, the dense index, BEIR I/O and the reranker seam."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from context_store.errors import ConfigError, InputRejected
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.measure.beir import beir_id_for, file_name_for, load_beir, write_corpus
from context_store.retrieve.dense_index import DenseIndex
from context_store.retrieve.evidence import FEATURES, candidate_features
from context_store.retrieve.fusion import Candidate, bm25_scores, bm25_with_mass, rrf
from context_store.retrieve.fusion_model import FusionModel, learned_fusion, load_fusion_model, text_coverage
from context_store.retrieve.reranker import load_reranker
from context_store.retrieve.retriever import Retriever
from context_store.retrieve.text_index import TermIndex
from context_store.route.confidence import Calibrator, default_confidence, fit_calibrator, load_calibrator
from context_store.route.decision import LOW_CONFIDENCE, NO_RESULTS, Reason, decide
from context_store.state.sources import parse_company_file
from context_store.store.context_store import ContextStore
from context_store.store.vector_index import VectorIndex


def test_rrf_hand_computed() -> None:
    a = Candidate("a", vector_rank=1, text_rank=3)
    b = Candidate("b", vector_rank=2)
    out = rrf([b, a])
    assert [c.key for c in out] == ["a", "b"]
    assert a.score == pytest.approx(1 / 61 + 1 / 63) and b.score == pytest.approx(1 / 62)


def test_learned_fusion_lifts_a_strong_text_match_and_keeps_dense_order_without_one() -> None:
    model = FusionModel(("cos_gap", "text_ratio"), np.zeros(2), np.ones(2), np.array([1.0, 0.3]))
    no_text = [Candidate("a", vector_score=0.8), Candidate("b", vector_score=0.7)]
    assert [c.key for c in learned_fusion(no_text, ["d1", "d2"], model)] == ["a", "b"]
    peaked = [Candidate("a", vector_score=0.60, text_score=1.0), Candidate("b", vector_score=0.58, text_score=10.0)]
    assert learned_fusion(peaked, ["d1", "d2"], model)[0].key == "b"
    dense_only = FusionModel(("cos_gap", "text_ratio"), np.zeros(2), np.ones(2), np.array([1.0, 0.0]))
    assert learned_fusion(peaked, ["d1", "d2"], dense_only)[0].key == "a"


def test_coverage_gate_lets_text_count_only_where_the_best_match_covers_the_query() -> None:
    model = FusionModel(("cos_gap", "text_ratio"), np.zeros(2), np.ones(2), np.array([1.0, 0.3]),
                        gated=("text_ratio",), gate_center=0.3, gate_width=0.05, coverage_prior=0.5)
    def top(mass: float | None) -> str:
        cands = [Candidate("a", vector_score=0.60, text_score=1.0), Candidate("b", vector_score=0.58, text_score=10.0)]
        return learned_fusion(cands, ["d1", "d2"], model, text_mass=mass)[0].key
    assert top(12.0) == "b"  # the best match covers 10/12 of the query: text counts
    assert top(100.0) == "a"  # a tenth of the query: the dense order stands
    assert top(None) == "b"  # the ranker cannot say: the training median (0.5) stands in
    assert text_coverage(np.array([0.0, 0.0]), 5.0, 0.5) == 0.0 and text_coverage(np.array([3.0]), 2.0, 0.5) == 1.0
    with pytest.raises(ConfigError):
        FusionModel(("cos_gap",), np.zeros(1), np.ones(1), np.ones(1), gated=("text_ratio",))


def test_query_mass_bounds_every_score_and_counts_words_no_row_holds() -> None:
    texts = ["the refund window is 30 days", "invoices are PDFs", "window cleaning", "refund refund refund"]
    index = TermIndex(texts, [str(i) for i in range(len(texts))])
    mass = index.query_mass("refund window")
    assert index.scores("refund window").max() < mass
    assert index.query_mass("the refund window") == pytest.approx(mass)  # stop words ask for nothing
    rarest = (index.k1 + 1) * np.log1p((len(texts) + 0.5) / 0.5)
    assert index.query_mass("refund window chargeback") == pytest.approx(mass + rarest, rel=1e-5)
    scores, mem_mass = bm25_with_mass("refund window chargeback", texts)
    assert scores == bm25_scores("refund window chargeback", texts) and max(scores) < mem_mass


def test_document_evidence_adds_up_a_documents_chunks() -> None:
    cos = np.array([0.80, 0.79, 0.78, 0.60])
    feats = candidate_features(cos, np.array([2.0, 1.0, 0.0, 0.0]), np.array([0, 1, 1, 2]))
    col = {f: i for i, f in enumerate(FEATURES)}
    assert feats[1, col["doc_cos_gap"]] == feats[2, col["doc_cos_gap"]] == pytest.approx(-0.01)
    assert feats[1, col["doc_cos_soft"]] > 0 == feats[0, col["doc_cos_soft"]]  # two chunks of one document add up
    assert feats[2, col["doc_text_max"]] == pytest.approx(0.5) and feats[3, col["text_ratio"]] == 0.0


def test_shipped_fusion_weights_load_and_name_their_provenance() -> None:
    model = load_fusion_model()
    assert set(model.features) <= set(FEATURES) and model.heading_weight >= 0
    assert {"sets", "date", "commit", "ndcg@10", "protocol", "gate_center"} <= set(model.provenance)
    assert set(model.gated) <= set(model.features) and 0 < model.coverage_prior <= 1
    for row in model.provenance["ndcg@10"].values():  # chosen without the set: measured on it, left out
        assert {"learned_loso", "loso_gate_center", "vector", "text", "rrf"} <= set(row)
    with pytest.raises(ConfigError):
        FusionModel(("no_such_feature",), np.zeros(1), np.ones(1), np.ones(1))


def test_bm25_prefers_the_matching_document() -> None:
    scores = bm25_scores("refund window", ["the refund window is 30 days", "invoices are PDFs", "window cleaning"])
    assert scores[0] > scores[2] > scores[1] == 0.0


def test_decision_reasons_and_extra_triggers() -> None:
    class R:
        results = [object()]

    assert decide(R(), 0.9, 0.5).decision == "answer"
    low = decide(R(), 0.3, 0.5)
    assert low.decision == "escalate" and [r.code for r in low.reasons] == [LOW_CONFIDENCE]
    empty = decide(type("E", (), {"results": []})(), 0.0, 0.5)
    assert [r.code for r in empty.reasons] == [NO_RESULTS, LOW_CONFIDENCE]
    routed = decide(R(), 0.9, 0.5, extra_reasons=[None, Reason("sensitive_topic", "mentions a chargeback", "routing")])
    assert routed.decision == "escalate" and routed.reasons[0].code == "sensitive_topic"
    with pytest.raises(ValueError):
        decide(R(), 0.5, 1.5)


def test_default_confidence_is_conservative() -> None:
    assert default_confidence({"dense_top": 0.3, "dense_margin": 0.2}) == 0.0
    assert default_confidence({"dense_top": 0.99, "dense_margin": 0.5}) == pytest.approx(0.8)
    assert default_confidence({"dense_top": 0.99, "dense_margin": 0.0}) == pytest.approx(0.4)


def test_calibrator_fits_separable_data_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    feats, ys = [], []
    for _ in range(400):
        top = float(rng.uniform(0.2, 0.9))
        feats.append({"dense_top": top, "dense_margin": float(rng.uniform(0, 0.2)), "text_top": 3.0, "agreement": 0.5})
        ys.append(bool(rng.uniform() < (top - 0.2) / 0.7))
    cal = fit_calibrator(feats, ys, k=10, mode="hybrid", model="m")
    assert cal.predict({"dense_top": 0.85}) > 0.75 > 0.25 > cal.predict({"dense_top": 0.25})
    path = cal.save(tmp_path / "calibrator.json")
    again = load_calibrator(path)
    assert isinstance(again, Calibrator) and again.predict(feats[0]) == pytest.approx(cal.predict(feats[0]))
    assert load_calibrator(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError):
        load_calibrator(tmp_path / "bad.json")
    with pytest.raises(ValueError):
        fit_calibrator(feats[:5], ys[:5])


def test_beir_round_trip_through_source_files(tmp_path: Path) -> None:
    root = tmp_path / "set"
    root.mkdir()
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "a/b.c 1", "title": "Title: with colon", "text": "Body text."}) + "\n"
                                       + json.dumps({"_id": ".hidden", "title": "", "text": "Dot id."}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "body"}) + "\n")
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta/b.c 1\t1\n")
    ds = load_beir(root)
    assert ds.judged_queries() == {"q1": "body"}
    write_corpus(ds, tmp_path / "out")
    for beir_id in ds.corpus:
        path = tmp_path / "out" / file_name_for(beir_id)
        assert path.exists() and not path.name.startswith(".") and "/" not in path.name
        assert beir_id_for(f"beir/{path.name}") == beir_id
    parsed = parse_company_file(tmp_path / "out" / file_name_for("a/b.c 1"), (tmp_path / "out" / file_name_for("a/b.c 1")).read_bytes())
    assert parsed.title == "Title: with colon" and "Body text." in parsed.text
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\tlots\n")
    with pytest.raises(InputRejected, match="not a number"):
        load_beir(root)
    (root / "corpus.jsonl").write_text("{broken\n")
    with pytest.raises(InputRejected, match="corpus.jsonl:1"):
        load_beir(root)
    with pytest.raises(InputRejected, match="no corpus.jsonl"):
        load_beir(tmp_path / "out")


def test_projected_dense_index_matches_exact_search(tmp_path: Path) -> None:
    import pyarrow as pa

    from context_store.store.vector_index import company_schema

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 32))
    vectors = (centres[rng.integers(0, 40, 4000)] + rng.normal(scale=0.3, size=(4000, 32))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [{"chunk_id": f"c{i}", "doc_id": f"s/d{i // 4}", "version_id": f"v{i // 4}", "chunk_hash": str(i), "ordinal": i % 4,
             "kind": "article", "title": "t", "heading": "", "text": "x", "source_path": "p", "source_changed_at": None,
             "indexed_at": None, "vector": v} for i, v in enumerate(vectors)]
    index = VectorIndex(str(tmp_path / "lance"))
    index.db.create_table("company_chunks", data=pa.Table.from_pylist(rows, schema=company_schema(32)))
    approx = DenseIndex(index, ann="projected", dims=16, pool=200)
    exact = DenseIndex(index, ann="exact")
    recalls = []
    for q in vectors[rng.choice(4000, 50, replace=False)] + rng.normal(scale=0.05, size=(50, 32)).astype(np.float32):
        _, a, _ = approx.search(q, 10)
        _, b, sb = exact.search(q, 10)
        assert np.all(np.diff(sb) <= 1e-6)  # best first
        recalls.append(len(set(a.tolist()) & set(b.tolist())) / 10)
    assert approx.snapshot().projection is not None and np.mean(recalls) >= 0.95
    mask = np.zeros(4000, dtype=bool)
    mask[:8] = True
    _, masked, _ = approx.search(vectors[100], 5, mask=mask)
    assert set(masked.tolist()) <= set(range(8))  # filtered searches are exact over the filtered rows


def test_dense_snapshot_follows_the_table_version(store: ContextStore, sources: dict[str, Path]) -> None:
    ingest(store, HashingEmbedder())
    dense = DenseIndex(store.index, refresh_interval=0.0)
    first = dense.snapshot()
    (sources["company"] / "new.md").write_text("# New\n\nA brand new article about parcels.\n")
    ingest(store, HashingEmbedder())
    second = dense.snapshot()
    assert second.version != first.version and second.size > first.size and dense.reloads == 2
    assert dense.snapshot() is second  # unchanged table: no reload


def test_reader_view_follows_writes_within_its_interval(store: ContextStore, sources: dict[str, Path]) -> None:
    ingest(store, HashingEmbedder())
    reader = store.index.reader(0.0)
    before = reader.versions()[store.index.company_table_name]
    handle = reader.table(store.index.company_table_name)
    (sources["company"] / "new.md").write_text("# New\n\nA brand new article about parcels.\n")
    ingest(store, HashingEmbedder())
    assert reader.table(store.index.company_table_name) is handle  # opened once
    assert reader.versions()[store.index.company_table_name] > before  # and still sees the writer's commit
    assert any("parcels" in r["text"] for r in reader.text_search(store.index.company_table_name, "parcels", 5, columns=["text"]))
    slow = store.index.reader(3600.0)
    pinned = slow.versions()
    (sources["company"] / "other.md").write_text("# Other\n\nAnother article about pallets.\n")
    ingest(store, HashingEmbedder())
    assert slow.versions() == pinned  # within the interval the reader answers from what it saw


def test_a_slow_reload_does_not_hold_requests(store: ContextStore, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    ingest(store, HashingEmbedder())
    dense = DenseIndex(store.index, refresh_interval=0.0, reload_wait=0.0, text_index=True)
    first = dense.snapshot()
    (sources["company"] / "new.md").write_text("# New\n\nA brand new article about parcels.\n")
    ingest(store, HashingEmbedder())
    release = threading.Event()
    load = dense._load

    def slow_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        release.wait(10)
        return load(*args, **kwargs)

    monkeypatch.setattr(dense, "_load", slow_load)
    assert dense.snapshot() is first  # the newer version is loading; the old one serves meanwhile
    assert dense.snapshot() is first and dense.reloads == 1  # one loader at a time
    release.set()
    deadline = time.monotonic() + 10
    while dense.reloads < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = dense.snapshot()
    assert second.version != first.version and second.size > first.size
    assert second.text is not None and second.text.search("parcels", 5)[0].size  # the text index moved with it


def test_refresh_serves_the_newest_version_now_and_never_goes_back(store: ContextStore, sources: dict[str, Path]) -> None:
    """A reader that looks for new versions once an hour: ``refresh`` is the way to see a commit at once."""
    ingest(store, HashingEmbedder())
    dense = DenseIndex(store.index.reader(3600.0), refresh_interval=3600.0, text_index=True)
    first = dense.snapshot()
    (sources["company"] / "new.md").write_text("# New\n\nA brand new article about parcels.\n")
    ingest(store, HashingEmbedder())
    assert dense.snapshot() is first  # within its interval the snapshot stays
    assert dense.refresh(timeout=10)
    fresh = dense.snapshot()
    assert fresh.version is not None and first.version is not None and fresh.version > first.version
    assert fresh.text is not None and fresh.text.search("parcels", 5)[0].size  # the text index moved with it
    dense._checked_at = 0.0  # the periodic look comes round: the reader's handle moved on too
    assert dense.snapshot() is fresh and dense.index.versions()[store.index.company_table_name] == fresh.version
    assert dense.refresh(timeout=10) and dense.snapshot() is fresh and dense.reloads == 2  # nothing newer: no load


def test_reranker_is_skipped_cleanly_when_not_installed(tmp_path: Path, store: ContextStore) -> None:
    assert load_reranker(None) == (None, "not configured")
    reranker, status = load_reranker(str(tmp_path / "no-such-model"))
    assert reranker is None and status.startswith("skipped")
    (tmp_path / "broken").mkdir()
    reranker, status = load_reranker(str(tmp_path / "broken"))
    assert reranker is None and "could not be loaded" in status

    class Reverse:
        name = "reverse"

        def score(self, query: str, texts: list[str]) -> list[float]:
            return [float(len(t)) for t in texts]  # longest text first, whatever the ranking said

    ingest(store, HashingEmbedder())
    result = Retriever(store, HashingEmbedder(), reranker=Reverse()).retrieve("refund", k=3)
    assert result.reranked and [len(h.text) for h in result.results] == sorted((len(h.text) for h in result.results), reverse=True)


def test_concurrent_projected_searches_share_a_first_stage_and_match_one_at_a_time(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    from context_store.store.vector_index import company_schema

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(3000, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [{"chunk_id": f"c{i}", "doc_id": f"s/d{i}", "version_id": f"v{i}", "chunk_hash": str(i), "ordinal": 0, "kind": "article",
             "title": "t", "heading": "", "text": "x", "source_path": "p", "source_changed_at": None, "indexed_at": None, "vector": v}
            for i, v in enumerate(vectors)]
    index = VectorIndex(str(tmp_path / "lance"))
    index.db.create_table("company_chunks", data=pa.Table.from_pylist(rows, schema=company_schema(24)))
    dense = DenseIndex(index, ann="projected", dims=8, pool=100)
    queries = vectors[:64] + rng.normal(scale=0.1, size=(64, 24)).astype(np.float32)
    alone = [dense.search(q, 10)[1].tolist() for q in queries]
    assert dense._first_stage.mean_batch == 1.0
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: dense.search(q, 10)[1].tolist(), queries))
    assert together == alone


def test_first_stage_onnx_and_numpy_pick_the_same_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from context_store.retrieve import first_stage

    rng = np.random.default_rng(9)
    vectors = rng.normal(size=(5000, 32)).astype(np.float32)
    projection = np.linalg.qr(rng.normal(size=(32, 8)))[0].astype(np.float32)
    queries = rng.normal(size=(3, 32)).astype(np.float32)
    fast = first_stage.ProjectedTopK(projection, (vectors @ projection).T, int8=False)
    monkeypatch.setattr(first_stage, "_session", lambda *_: (_ for _ in ()).throw(ImportError("no onnx")))
    slow = first_stage.ProjectedTopK(projection, (vectors @ projection).T, int8=False)
    assert (fast.engine, slow.engine) == ("onnxruntime", "numpy")
    exact = np.argsort(-(queries @ projection) @ (vectors @ projection).T, axis=1)[:, :50]
    for rows in (fast.top(queries, 50), slow.top(queries, 50)):
        assert rows.shape == (3, 50) and [set(r.tolist()) for r in rows] == [set(r.tolist()) for r in exact]
    assert fast.top(queries[:1], 10_000).shape == (1, 5000)  # a pool past the table is every row


def test_int8_first_stage_onnx_and_numpy_agree_and_keep_the_float_pools_best_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 rows: ONNX Runtime's MatMulInteger and numpy's float products of the same integers pick
    the same pool, whichever queries share the batch, and it holds the float32 pool's best rows."""
    from context_store.retrieve import first_stage

    rng = np.random.default_rng(9)
    vectors = rng.normal(size=(5000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    projection = np.linalg.qr(rng.normal(size=(32, 8)))[0].astype(np.float32)
    queries = rng.normal(size=(3, 32)).astype(np.float32)
    fast = first_stage.ProjectedTopK(projection, (vectors @ projection).T)
    monkeypatch.setattr(first_stage, "_session", lambda *_: (_ for _ in ()).throw(ImportError("no onnx")))
    slow = first_stage.ProjectedTopK(projection, (vectors @ projection).T)
    assert (fast.engine, slow.engine, fast.int8) == ("onnxruntime", "numpy", True)
    pools = [set(r.tolist()) for r in fast.top(queries, 200)]
    assert pools == [set(r.tolist()) for r in slow.top(queries, 200)]
    assert [set(fast.top(q[None, :], 200)[0].tolist()) for q in queries] == pools  # alone as in a batch
    exact = np.argsort(-(queries @ projection) @ (vectors @ projection).T, axis=1)
    for pool, best in zip(pools, exact):
        assert set(best[:20].tolist()) <= pool and len(pool & set(best[:200].tolist())) >= 180


def test_a_lagging_snapshot_serves_no_superseded_chunk_and_fills_k_from_the_rest_of_its_prefix(
    store: ContextStore, sources: dict[str, Path]
) -> None:
    """SQL is asked about the first k candidates first; when they were superseded, the rest of the prefix serves."""
    ingest(store, HashingEmbedder())
    dense = DenseIndex(store.index, refresh_interval=3600.0, text_index=True)  # keeps serving its first snapshot
    retriever = Retriever(store, HashingEmbedder(), dense=dense)
    before = retriever.retrieve("refund window", k=1)
    assert [h.doc_id for h in before.results] == ["company/refunds.md"] and before.dropped_superseded == 0
    (sources["company"] / "refunds.md").write_text("# Refund policy\n\nRefunds now take ninety days.\n")
    ingest(store, HashingEmbedder())
    after = retriever.retrieve("refund window", k=1)
    assert after.dense_snapshot_version == before.dense_snapshot_version  # the snapshot still holds the old refund chunks
    assert after.dropped_superseded >= 1 and len(after.results) == 1
    assert after.results[0].doc_id != "company/refunds.md" and after.results[0].content_hash


def test_features_asked_by_name_are_the_full_matrix_columns() -> None:
    """Serving computes only the features its model names; each is bit for bit the full matrix's column."""
    rng = np.random.default_rng(11)
    cos = rng.uniform(0.2, 0.8, 60)
    text = np.where(rng.random(60) < 0.5, rng.uniform(0.0, 9.0, 60), 0.0)
    doc = rng.integers(0, 20, 60)
    full = candidate_features(cos, text, doc)
    for names in (["cos_gap", "text_ratio"], ["dense_margin_x_gap", "agree", "doc_cos_soft"], list(reversed(FEATURES))):
        assert np.array_equal(candidate_features(cos, text, doc, names), full[:, [FEATURES.index(n) for n in names]])
    model = load_fusion_model()
    own = candidate_features(cos, text, doc, model.features)
    assert np.array_equal(model.score_own(own, 0.4), model.score(full, 0.4))
