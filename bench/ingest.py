"""Ingest benchmark on the real Plausible help-centre history.

Every historical version of every article becomes its own file (~3,100 files), then, in one
process and one run:

* ``full_vs_bare_encode``: bare ``model.encode`` over exactly the chunk texts the pipeline
  embedded (same model, same batch size), divided by the pipeline's full ingest time
  (goal >= 0.9: the pipeline adds at most 10 % around the model);
* ``noop_vs_full``: a second ingest with nothing changed, over the full ingest (goal <= 0.02);
* ``edit1pct_vs_full``: re-ingest after editing one paragraph in 1 % of the files (goal <= 0.05);
* ``chunks_reembedded`` vs ``chunks_changed`` for that edit (goal: equal; a changed chunk whose
  new text another document already had reuses that embedding, counted apart as
  ``chunks_changed_to_known_text``: then ``chunks_reembedded == chunks_changed_to_new_text``).

``chunks_per_s`` is the full ingest's end-to-end rate (goal on one H200 with ``--device cuda``:
>= 2,000 chunks/s); ``--device cuda`` runs the model on the GPU (fp32, batches of at least 128).

Usage: python bench/ingest.py [--history DIR] [--limit N] [--device auto|cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sqlmodel import col, select  # noqa: E402

from context_store.index.embed.device import resolve_device  # noqa: E402
from context_store.index.embed.factory import GPU_MIN_BATCH  # noqa: E402
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder  # noqa: E402
from context_store.index.ingest import ingest  # noqa: E402
from context_store.store.context_store import ContextStore  # noqa: E402
from context_store.store.models import ChunkRecord, Document, EmbeddingCacheEntry  # noqa: E402

DEFAULT_HISTORY = Path(__file__).resolve().parents[2] / "shared" / "data" / "plausible_docs_history"


def build_corpus(history: Path, out: Path, limit: int | None) -> int:
    blobs: dict[str, str] = {}
    with gzip.open(history / "blobs.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            blobs[row["blob"]] = row["text"]
    written: set[Path] = set()
    versions: dict[str, int] = {}
    with (history / "changes.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            for change in json.loads(line)["changes"]:
                if change["status"] == "D" or not change.get("blob") or change["blob"] not in blobs:
                    continue
                path = Path(change["path"])
                versions[change["path"]] = versions.get(change["path"], 0) + 1
                target = out / path.parent / f"{path.stem}__v{versions[change['path']]:03d}{path.suffix or '.md'}"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(blobs[change["blob"]], encoding="utf-8")
                written.add(target)
                if limit and len(written) >= limit:
                    return len(written)
    return len(written)


def edit_one_paragraph(path: Path, rng: random.Random) -> bool:
    text = path.read_text(encoding="utf-8")
    paragraphs = text.split("\n\n")
    candidates = [i for i, p in enumerate(paragraphs) if len(p) > 80 and not p.lstrip().startswith(("#", "```", "---", "|", "<"))]
    if not candidates:
        return False
    i = rng.choice(candidates)
    paragraphs[i] = paragraphs[i].rstrip() + " This sentence was added by the benchmark edit."
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return True


def chunk_hashes(store: ContextStore, doc_ids: list[str]) -> dict[str, set[str]]:
    with store.session() as s:
        rows = s.exec(
            select(Document.doc_id, ChunkRecord.chunk_hash)
            .join(ChunkRecord, col(ChunkRecord.version_id) == col(Document.current_version_id))
            .where(col(Document.doc_id).in_(doc_ids))
        ).all()
    out: dict[str, set[str]] = {d: set() for d in doc_ids}
    for doc_id, h in rows:
        out[doc_id].add(h)
    return out


def embedded_hashes(store: ContextStore, model: str) -> set[str]:
    with store.session() as s:
        return set(s.exec(select(EmbeddingCacheEntry.chunk_hash).where(EmbeddingCacheEntry.model == model)).all())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=Path, default=DEFAULT_HISTORY)
    parser.add_argument("--limit", type=int, default=None, help="only the first N file versions (quick runs)")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default: 64 on the CPU, {GPU_MIN_BATCH} on a GPU")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs (embedding.device)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not (args.history / "changes.jsonl").exists():
        print(f"history not found at {args.history}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="fc-bench-ingest-"))
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    try:
        corpus = work / "corpus"
        files = build_corpus(args.history, corpus, args.limit)
        log(f"corpus: {files} files in {corpus}")
        store = ContextStore.open(work / "home", company_sources=[{"name": "plausible", "path": str(corpus)}])
        device = resolve_device(args.device)
        batch_size = args.batch_size or (64 if device == "cpu" else GPU_MIN_BATCH)
        embedder = SentenceTransformerEmbedder(batch_size=batch_size, device=device)
        embedder.encode(["warm up the model before timing"])

        t0, c0 = time.perf_counter(), time.process_time()
        full = ingest(store, embedder)
        full_s, full_cpu = time.perf_counter() - t0, time.process_time() - c0
        log(f"full ingest: {full_s:.1f}s, {full.company_index.chunks_embedded} chunks embedded")

        with store.session() as s:
            texts = {h: t for h, t in s.exec(select(ChunkRecord.chunk_hash, ChunkRecord.text)).all()}
        bare_texts = list(texts.values())
        assert len(bare_texts) == full.company_index.chunks_embedded, (len(bare_texts), full.company_index.chunks_embedded)
        t0, c0 = time.perf_counter(), time.process_time()
        embedder.model.encode(bare_texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        bare_s, bare_cpu = time.perf_counter() - t0, time.process_time() - c0
        log(f"bare encode of the same {len(bare_texts)} texts: {bare_s:.1f}s")

        t0, c0 = time.perf_counter(), time.process_time()
        noop = ingest(store, embedder)
        noop_s, noop_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert noop.company_index.chunks_embedded == 0 and noop.company.unchanged + noop.company.skipped == files
        log(f"no-op ingest: {noop_s:.3f}s")

        rng = random.Random(7)
        all_files = sorted(p for p in corpus.rglob("*") if p.is_file())
        edited: list[Path] = []
        for path in rng.sample(all_files, len(all_files)):
            if len(edited) >= max(1, len(all_files) // 100):
                break
            if edit_one_paragraph(path, rng):
                edited.append(path)
        doc_ids = [f"plausible/{p.relative_to(corpus).as_posix()}" for p in edited]
        before = chunk_hashes(store, doc_ids)
        embedded_before = embedded_hashes(store, embedder.name)
        t0, c0 = time.perf_counter(), time.process_time()
        edit = ingest(store, embedder)
        edit_s, edit_cpu = time.perf_counter() - t0, time.process_time() - c0
        after = chunk_hashes(store, doc_ids)
        # distinct chunk texts that exist now and did not exist in the edited documents before
        changed = set().union(*(after[d] - before[d] for d in doc_ids))
        # a changed chunk whose new text some other document already had reuses that embedding
        already = changed & embedded_before
        log(f"1% edit ({len(edited)} files): {edit_s:.2f}s, {edit.company_index.chunks_embedded} re-embedded, {len(changed)} changed"
            f" ({len(already)} of them to a text the store had already embedded)")

        result = {
            "device": device,
            "batch_size": batch_size,
            "files": files,
            "chunks": len(bare_texts),
            "full_s": round(full_s, 3),
            "chunks_per_s": round(len(bare_texts) / full_s, 1),
            "bare_encode_chunks_per_s": round(len(bare_texts) / bare_s, 1),
            "bare_encode_s": round(bare_s, 3),
            "noop_s": round(noop_s, 3),
            "edit1pct_s": round(edit_s, 3),
            "full_vs_bare_encode": round(bare_s / full_s, 3),
            "noop_vs_full": round(noop_s / full_s, 4),
            "edit1pct_vs_full": round(edit_s / full_s, 4),
            "cpu_full_vs_bare_encode": round(bare_cpu / full_cpu, 3),
            "cpu_noop_vs_full": round(noop_cpu / full_cpu, 4),
            "cpu_edit1pct_vs_full": round(edit_cpu / full_cpu, 4),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "files_edited": len(edited),
            "chunks_reembedded": edit.company_index.chunks_embedded,
            "chunks_changed": len(changed),
            "chunks_changed_to_known_text": len(already),
            "chunks_changed_to_new_text": len(changed - already),
        }
        if args.json:
            print(json.dumps(result))
        else:
            for key, value in result.items():
                print(f"{key:>22}: {value}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
