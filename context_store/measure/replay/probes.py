"""Judging a store after a commit: wait until it serves the commit, then probe it with queries from the change.

- **lag**: ``wait_until_current`` polls, as an outside reader would, until every changed
  document is current and indexed (deleted ones gone);
- **stale hit**: a retrieved chunk whose version is not the file's current text (or whose
  file is deleted), judged by content hash against the replay's own copy;
- **miss**: a changed document whose current text is not in the top ``k`` for a query taken
  from the lines the commit added (``probe_queries`` picks them).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import col, select

from context_store.index.embed.protocol import Embedder
from context_store.measure.replay.history import FileWrite
from context_store.retrieve.retriever import retrieve
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, DocumentVersion

__all__ = ["ProbeOutcome", "probe", "probe_queries", "probes_for", "wait_until_current"]


def wait_until_current(
    store: ContextStore, expected: dict[str, str | None], *, started: float, timeout: float = 120.0, poll_s: float = 0.01
) -> dict[str, float]:
    """Poll until every ``doc_id`` serves its expected hash (``None``: deleted), indexed.

    Returns seconds from ``started`` (a ``time.time()``) to the poll that first saw each
    document done; documents still not done at the timeout are missing from the result.
    """
    done: dict[str, float] = {}
    remaining = dict(expected)
    deadline = time.time() + timeout
    while remaining and time.time() < deadline:
        with store.session() as session:
            ids = list(remaining)
            rows = session.exec(
                select(Document.doc_id, Document.current_version_id, Document.indexed_version_id, DocumentVersion.content_hash)
                .outerjoin(DocumentVersion, col(DocumentVersion.version_id) == col(Document.current_version_id))
                .where(col(Document.doc_id).in_(ids))
            ).all()
        now = time.time()
        state = {doc_id: (cur, idx, h) for doc_id, cur, idx, h in rows}
        for doc_id, want in list(remaining.items()):
            cur, idx, h = state.get(doc_id, (None, None, None))
            ok = (cur is None and idx is None) if want is None else (h == want and cur is not None and cur == idx)
            if ok:
                done[doc_id] = now - started
                remaining.pop(doc_id)
        if remaining:
            time.sleep(poll_s)
    return done


_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_NOISE = re.compile(r"[*_`>#|]+|<[^>]+>")
_LIST_MARK = re.compile(r"^\s*(?:[-+*]|\d+[.)])\s+")


def _clean(line: str) -> str:
    line = _LIST_MARK.sub("", line)
    line = _MD_LINK.sub(r"\1", line)
    line = _MD_NOISE.sub(" ", line)
    return re.sub(r"\s+", " ", line).strip()


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n---[ \t]*\n", re.DOTALL)


def _candidate_lines(text: str) -> list[str]:
    out, fence = [], False
    for raw in _FRONT_MATTER.sub("", text).splitlines():
        if raw.strip().startswith(("```", "~~~")):
            fence = not fence
            continue
        if fence or raw.strip().startswith(("---", "import ", "export ", "title:", "id:", "slug:", "sidebar")):
            continue
        cleaned = _clean(raw)
        if len(cleaned.split()) >= 5:
            out.append(cleaned)
    return out


def probe_queries(old_text: str | None, new_text: str | None, *, max_chars: int = 300) -> tuple[str | None, str | None]:
    """``(added, removed)``: the longest line the change added, and the longest it removed.

    The added line must be found (else a miss); the removed line must not come back from
    the document's superseded text (else a stale hit).
    """
    new_lines = _candidate_lines(new_text or "")
    old_lines = _candidate_lines(old_text or "")
    old_set, new_set = set(old_lines), set(new_lines)
    added = [line for line in new_lines if line not in old_set]
    removed = [line for line in old_lines if line not in new_set]
    pick = lambda lines: max(lines, key=len)[:max_chars] if lines else None  # noqa: E731
    return pick(added), pick(removed)


@dataclass
class ProbeOutcome:
    query: str
    doc_id: str
    kind: str  # added | removed
    stale: list[str] = field(default_factory=list)  # "doc_id@version" served although superseded
    found: bool | None = None  # added probes only
    served_at: datetime | None = None


def probe(
    store: ContextStore,
    embedder: Embedder,
    query: str,
    *,
    doc_id: str,
    kind: str,
    truth: dict[str, str | None],
    ignore: set[str] = frozenset(),  # type: ignore[assignment]
    k: int = 10,
) -> ProbeOutcome:
    """Retrieve for ``query`` and judge every hit against the ground truth.

    ``ignore``: documents whose newest file the store rightly skipped (so it keeps serving
    the last good version); their hits are neither stale nor fresh.
    """
    result = retrieve(store, embedder, query, k=k)
    outcome = ProbeOutcome(query=query, doc_id=doc_id, kind=kind, served_at=result.served_at)
    version_ids = {h.version_id for h in result.results}
    with store.session() as session:
        hashes = dict(
            session.exec(
                select(DocumentVersion.version_id, DocumentVersion.content_hash).where(col(DocumentVersion.version_id).in_(version_ids))
            ).all()
        ) if version_ids else {}
    needle = query[:80]
    for hit in result.results:
        if hit.doc_id in ignore:
            continue
        want = truth.get(hit.doc_id)
        if want is None or hashes.get(hit.version_id) != want:
            outcome.stale.append(f"{hit.doc_id}@{hit.version_id}")  # deleted, or not its current text
        elif kind == "added" and (hit.doc_id == doc_id or needle in _clean(hit.text)):
            outcome.found = True
    if kind == "added" and outcome.found is None:
        outcome.found = False
    return outcome


def probes_for(writes: list[FileWrite], limit: int) -> list[tuple[str, str, str]]:
    """(query, doc_id, kind) for up to ``limit`` touched documents, edits before adds and deletes."""
    order = sorted(writes, key=lambda w: (w.text is None, w.old_text is None, w.rel_path))
    out: list[tuple[str, str, str]] = []
    for w in order:
        if len({d for _, d, _ in out}) >= limit:
            break
        if w.text is not None and not w.indexable:
            continue
        added, removed = probe_queries(w.old_text, w.text)
        if added and w.text is not None:
            out.append((added, w.doc_id, "added"))
        if removed:
            out.append((removed, w.doc_id, "removed"))
    return out
