"""Replay a documentation history into a watched folder and measure freshness end to end.

A history is ``changes.jsonl`` (one commit per line, oldest first:
``{sha, date, subject, changes: [{status, path, old_path, blob}]}``) plus
``blobs.jsonl.gz`` (``{blob, text}``). Replaying writes each commit's files into a real
folder, lets a *driver* (the warm watcher, or the Dagster sensor path) bring a store up to
date, and then judges the store against the ground truth the replay itself holds:

- **lag**: time from the moment the commit's files were written until an outside reader
  of the store sees every one of them current and indexed (deleted ones gone);
- **stale hit**: a retrieved chunk whose version is not the file's current text (or whose
  file is deleted) — judged by content hash against the replay's own copy, not by the
  store's opinion of itself;
- **miss**: a changed document whose current text is not in the top ``k`` for a query
  taken from the lines the commit added;
- **chunks changed**: chunks of the written texts that no earlier text had, computed with
  the same chunker but independently of the store; a store that embeds only what changed
  embeds exactly this many.
- **embedding floor** (:class:`EmbedFloor`): per changed file, the lag it would have if
  indexing did nothing but embed those changed chunks with the same model, file after file,
  cheapest first: what the measured lag is to be compared with.

Drivers live outside this module (they need watchdog and Dagster); this module is the
framework-free part: reading histories, writing commits, waiting, probing, counting.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from sqlmodel import col, func, select

from context_store._common import percentile, sha256, utcnow
from context_store.errors import ConfigError, InputRejected
from context_store.index.chunking import chunk_document
from context_store.index.embed.protocol import Embedder
from context_store.index.indexing import cheapest_first
from context_store.retrieve.retriever import retrieve
from context_store.settings import Settings
from context_store.state.documents import doc_id_for
from context_store.state.sources import COMPANY_SUFFIXES, is_ignored_name, parse_company_file
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, DocumentVersion, EmbeddingCacheEntry

__all__ = [
    "Change",
    "Commit",
    "DriverStats",
    "EmbedFloor",
    "FileWrite",
    "History",
    "ProbeOutcome",
    "ReplayDriver",
    "ReplayState",
    "chunk_hashes",
    "chunk_texts",
    "copy_embeddings",
    "embedded_since",
    "probe",
    "probe_queries",
    "run_replay",
    "served_state",
    "wait_until_current",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    status: str  # A | M | D | R | T (git's letters; C copies are treated like A)
    path: str
    old_path: str | None
    blob: str | None


@dataclass(frozen=True)
class Commit:
    sha: str
    date: str
    subject: str
    changes: tuple[Change, ...]


class History:
    """A history folder: commits in order, blob texts loaded once."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        changes = self.directory / "changes.jsonl"
        blobs = self.directory / "blobs.jsonl.gz"
        if not changes.is_file() or not blobs.is_file():
            raise ConfigError(f"{self.directory}: a history needs changes.jsonl and blobs.jsonl.gz (see FORMAT.md)")
        self.commits: list[Commit] = []
        with changes.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    self.commits.append(
                        Commit(
                            sha=str(raw.get("sha", lineno)),
                            date=str(raw.get("date", "")),
                            subject=str(raw.get("subject", "")),
                            changes=tuple(
                                Change(str(c["status"])[:1], c["path"], c.get("old_path"), c.get("blob"))
                                for c in raw.get("changes") or []
                            ),
                        )
                    )
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ConfigError(f"{changes} line {lineno}: not a commit record ({exc})") from exc
        self._blobs: dict[str, str] | None = None
        self._blob_path = blobs

    def blob(self, blob_id: str) -> str | None:
        """The text of a blob; ``None`` when the history does not carry it (a binary file, say)."""
        if self._blobs is None:
            self._blobs = {}
            with gzip.open(self._blob_path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        rec = json.loads(line)
                        self._blobs[rec["blob"]] = rec["text"]
        return self._blobs.get(blob_id)

    def __len__(self) -> int:
        return len(self.commits)


@dataclass
class FileWrite:
    """One file a commit touched, as written to disk (``text`` None: deleted)."""

    rel_path: str
    text: str | None
    old_text: str | None
    doc_id: str
    indexable: bool  # False: the store will skip it (unsupported type, hidden, empty...)


def _safe_rel(path: str) -> str | None:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return p.as_posix()


class ReplayState:
    """The replay's ground truth: the text of every live path, mirrored into one or more folders."""

    def __init__(self, history: History, source_name: str, settings: Settings) -> None:
        self.history = history
        self.source_name = source_name
        self.settings = settings
        self.files: dict[str, str] = {}
        self.skipped_paths: set[str] = set()
        self.missing_blobs = 0

    def _indexable(self, rel: str, text: str) -> bool:
        parts = PurePosixPath(rel).parts
        if is_ignored_name(parts[-1]) or any(p.startswith(".") for p in parts[:-1]):
            return False
        if PurePosixPath(rel).suffix.lower() not in COMPANY_SUFFIXES:
            return False
        data = text.encode("utf-8")
        if len(data) > self.settings.max_file_bytes or not data.strip() or b"\x00" in data[:8192]:
            return False
        try:
            parse_company_file(Path(rel), data)
        except InputRejected:
            return False
        return True

    def step(self, commit: Commit) -> list[FileWrite]:
        """Apply one commit to the ground truth; returns what changed (last change per path wins)."""
        touched: dict[str, FileWrite] = {}

        def record(rel: str, text: str | None) -> None:
            old = self.files.get(rel)
            if text is None:
                self.files.pop(rel, None)
            else:
                self.files[rel] = text
            first_old = touched[rel].old_text if rel in touched else old
            indexable = text is not None and self._indexable(rel, text)
            if text is not None and not indexable:
                self.skipped_paths.add(rel)
            else:
                self.skipped_paths.discard(rel)
            touched[rel] = FileWrite(rel, text, first_old, doc_id_for(self.source_name, rel), indexable)

        for change in commit.changes:
            rel = _safe_rel(change.path)
            if rel is None:
                log.warning("commit %s: unsafe path %r skipped", commit.sha[:10], change.path)
                continue
            if change.status == "R":
                old_rel = _safe_rel(change.old_path or "")
                if old_rel is not None:
                    record(old_rel, None)
            if change.status == "D":
                record(rel, None)
                continue
            text = self.history.blob(change.blob or "")
            if text is None:  # not carried by the history: the file is left as it was
                self.missing_blobs += 1
                log.warning("commit %s: no text for %s (blob %s); change skipped", commit.sha[:10], rel, change.blob)
                continue
            record(rel, text)
        return list(touched.values())

    @staticmethod
    def write(root: Path, writes: list[FileWrite]) -> None:
        """Deletions first, then writes: a rename's new file never races its old one's removal."""
        for w in writes:
            if w.text is None:
                target = root / w.rel_path
                target.unlink(missing_ok=True)
                parent = target.parent
                while parent != root and parent.exists() and not any(parent.iterdir()):
                    parent.rmdir()  # like git: an emptied folder goes too
                    parent = parent.parent
        for w in writes:
            if w.text is not None:
                target = root / w.rel_path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(w.text.encode("utf-8"))

    def write_all(self, root: Path) -> None:
        for rel, text in self.files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8"))

    def truth(self) -> dict[str, str | None]:
        """doc_id -> content hash the store must serve (files the store skips are left out)."""
        return {
            doc_id_for(self.source_name, rel): sha256(text.encode("utf-8"))
            for rel, text in self.files.items()
            if rel not in self.skipped_paths
        }


def chunk_texts(settings: Settings, doc_id: str, rel_path: str, text: str) -> dict[str, str]:
    """Chunk hash -> the exact text the store embeds for it (same parser, same chunker).

    A chunk's text starts with its heading trail, the document's title first, so a title
    change gives every chunk of the document a new text and a new hash.
    """
    try:
        parsed = parse_company_file(Path(rel_path), text.encode("utf-8"))
    except InputRejected:
        return {}
    return {c.chunk_hash: c.text for c in chunk_document(doc_id, parsed.title, parsed.text, settings.chunking)}


def chunk_hashes(settings: Settings, doc_id: str, rel_path: str, text: str) -> set[str]:
    """The chunk hashes the store will compute for this text (same parser, same chunker)."""
    return set(chunk_texts(settings, doc_id, rel_path, text))


# --- waiting for a store to catch up -----------------------------------------------------------


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


# --- probing ---------------------------------------------------------------------------------------

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


# --- the run itself --------------------------------------------------------------------------------


class ReplayDriver(Protocol):
    """Brings one store up to date after the replay wrote files into ``root``."""

    name: str
    root: Path
    store: ContextStore

    def bootstrap(self) -> None:
        """Ingest the folder as it stands before the measured commits (not measured)."""
        ...

    def active(self, index: int) -> bool:
        """Whether commit ``index`` is measured on this driver (else only written)."""
        ...

    def after_write(self, writes: list[FileWrite], started: float) -> None:
        """Called once a commit's files are on disk (e.g. to run a sensor tick); may block."""
        ...

    def quiesce(self) -> None:
        """Wait for work ``after_write`` left running, once the commit is measured and probed,
        so the next driver is measured on a machine this one no longer loads."""
        ...

    def finish(self) -> None:
        """Apply whatever is still pending, so final states can be compared."""
        ...


# Lag is also reported for commits touching at most this many files: one person's edit, as
# opposed to a bulk reformat whose hundreds of chunks take seconds of embedding on any path.
SMALL_COMMIT = 3


def _pct(values: list[float], q: float) -> float | None:
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
            "lag_p50_s": _pct(self.lags, 50),
            "lag_p95_s": _pct(self.lags, 95),
            "lag_max_s": round(max(self.lags), 3) if self.lags else None,
            "commit_lag_p50_s": _pct(self.commit_lags, 50),
            "commit_lag_p95_s": _pct(self.commit_lags, 95),
            "small_commit_changes": len(self.small_commit_lags),
            "small_commit_lag_p50_s": _pct(self.small_commit_lags, 50),
            "small_commit_lag_p95_s": _pct(self.small_commit_lags, 95),
            "timeouts": self.timeouts,
            "probes": self.probes,
            "stale_hits": self.stale_hits,
            "misses": self.misses,
            "chunks_embedded": self.chunks_embedded,
            "stale_examples": self.stale_examples[:5],
            "miss_examples": self.miss_examples[:5],
        }


@dataclass
class EmbedFloor:
    """A measured lower bound for a path's lag: what each changed file would wait if indexing
    did nothing but embed the chunk texts its commit made new, with the path's own embedder.

    Per commit, files are embedded one after another, each in one ``encode`` call, in the
    order an index run takes them (``indexing.cheapest_first``); a file's floor is the embedding time up to and
    including its own texts. A file with nothing new to embed (a deletion, an edit outside
    every chunk, a text embedded before) has floor 0.
    """

    lags: list[float] = field(default_factory=list)
    commit_lags: list[float] = field(default_factory=list)  # per commit: its slowest file
    seconds: float = 0.0
    chunks: int = 0

    def measure(self, embedder: Embedder, new_texts: dict[str, dict[str, str]]) -> dict[str, float]:
        """Time one commit. ``new_texts``: doc_id -> (chunk hash -> text new in this commit) for
        every document whose lag the commit counts, empty when there is nothing to embed."""
        cost = {doc_id: sum(len(t) for t in texts.values()) for doc_id, texts in new_texts.items()}
        floors: dict[str, float] = {}
        embedded: set[str] = set()
        elapsed = 0.0
        for doc_id in cheapest_first(cost):
            # a text another file of the commit shares is embedded once, with the cheaper file
            todo = {h: t for h, t in new_texts[doc_id].items() if h not in embedded}
            if todo:
                started = time.perf_counter()
                embedder.encode(list(todo.values()))
                elapsed += time.perf_counter() - started
                embedded |= todo.keys()
            floors[doc_id] = elapsed if new_texts[doc_id] else 0.0
        self.lags.extend(floors.values())
        if floors:
            self.commit_lags.append(max(floors.values()))
        self.seconds += elapsed
        self.chunks += len(embedded)
        return floors

    def summary(self) -> dict[str, Any]:
        return {
            "changes_measured": len(self.lags),
            "lag_p50_s": _pct(self.lags, 50),
            "lag_p95_s": _pct(self.lags, 95),
            "lag_max_s": round(max(self.lags), 3) if self.lags else None,
            "per_commit_p95_s": _pct(self.commit_lags, 95),
            "seconds": round(self.seconds, 3),
            "chunks": self.chunks,
        }


def iter_commits(history: History, start: int, count: int | None) -> Iterator[tuple[int, Commit]]:
    end = len(history) if count is None else min(len(history), start + count)
    for i in range(start, end):
        yield i, history.commits[i]


def embedded_since(store: ContextStore, since: datetime) -> int:
    """Chunks (and facts) embedded since ``since``: each embedding is cached exactly once."""
    with store.session() as session:
        return int(
            session.exec(select(func.count()).select_from(EmbeddingCacheEntry).where(col(EmbeddingCacheEntry.created_at) >= since)).one()
        )


def copy_embeddings(source: ContextStore, target: ContextStore) -> int:
    """Seed ``target``'s embedding cache with ``source``'s (keyed by chunk hash and model)."""
    with source.session() as src:
        entries = list(src.exec(select(EmbeddingCacheEntry)).all())
    with target.session() as dst:
        known = set(dst.exec(select(EmbeddingCacheEntry.chunk_hash, EmbeddingCacheEntry.model)).all())
        fresh = [e for e in entries if (e.chunk_hash, e.model) not in known]
        dst.add_all(
            EmbeddingCacheEntry(chunk_hash=e.chunk_hash, model=e.model, dim=e.dim, vector=e.vector, created_at=e.created_at)
            for e in fresh
        )
    return len(fresh)


def served_state(store: ContextStore) -> tuple[dict[str, str], set[str]]:
    """(doc_id -> current content hash, chunk ids in LanceDB): what two stores must agree on."""
    with store.session() as session:
        current = dict(
            session.exec(
                select(Document.doc_id, DocumentVersion.content_hash).join(
                    DocumentVersion, col(DocumentVersion.version_id) == col(Document.current_version_id)
                )
            ).all()
        )
    return current, store.index.ids(store.index.company_table_name, "chunk_id")


def _probes_for(writes: list[FileWrite], limit: int) -> list[tuple[str, str, str]]:
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


def run_replay(
    history: History,
    drivers: list[ReplayDriver],
    *,
    embedder: Embedder,
    settings: Settings,
    source_name: str,
    start: int,
    commits: int | None,
    probes_per_commit: int = 4,
    k: int = 10,
    timeout_s: float = 120.0,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    floor_for: str | None = None,
) -> dict[str, Any]:
    """Bootstrap every driver to commit ``start``, then replay ``commits`` commits one by one.

    ``floor_for``: the driver (by name) whose measured commits also get an :class:`EmbedFloor`,
    timed with ``embedder`` once every driver has measured the commit and quiesced, so it never
    overlaps a measured lag. ``embedder`` must then be the object that driver embeds with.
    """
    began = time.perf_counter()
    state = ReplayState(history, source_name, settings)
    seen_hashes: set[str] = set()
    for _, commit in iter_commits(history, 0, start):
        state.step(commit)
    for rel, text in state.files.items():
        if rel not in state.skipped_paths:
            seen_hashes |= chunk_hashes(settings, doc_id_for(source_name, rel), rel, text)
    for i, driver in enumerate(drivers):
        state.write_all(driver.root)
        if i:  # same texts, same model: the first bootstrap's embeddings serve the others
            copy_embeddings(drivers[0].store, driver.store)
        driver.bootstrap()
    bootstrap_s = time.perf_counter() - began
    replay_started = utcnow()
    stats = {d.name: DriverStats(d.name) for d in drivers}
    floor = EmbedFloor() if floor_for is not None else None
    chunks_changed = files_changed = replayed = 0
    end = len(history) if commits is None else min(len(history), start + commits)
    for index, commit in iter_commits(history, start, commits):
        writes = state.step(commit)
        replayed += 1
        files_changed += len(writes)
        # per document whose lag is measured (deletions too): the chunk texts no earlier text had
        new_texts: dict[str, dict[str, str]] = {}
        for w in writes:
            if w.text is None or w.indexable:
                texts = chunk_texts(settings, w.doc_id, w.rel_path, w.text) if w.text is not None else {}
                new_texts[w.doc_id] = {h: t for h, t in texts.items() if h not in seen_hashes}
        new_hashes = {h for texts in new_texts.values() for h in texts}
        chunks_changed += len(new_hashes)
        seen_hashes |= new_hashes
        expected = {w.doc_id: (sha256(w.text.encode("utf-8")) if w.text is not None else None) for w in writes if w.text is None or w.indexable}
        truth = state.truth()
        ignore = {doc_id_for(source_name, rel) for rel in state.skipped_paths}
        measured_on: set[str] = set()
        for driver in drivers:
            measured = driver.active(index)
            started = time.time()
            ReplayState.write(driver.root, writes)
            if not measured:
                continue
            measured_on.add(driver.name)
            st = stats[driver.name]
            st.commits += 1
            driver.after_write(writes, started)
            lags = wait_until_current(driver.store, expected, started=started, timeout=timeout_s)
            st.lags.extend(lags.values())
            if lags:
                st.commit_lags.append(max(lags.values()))
            if len(writes) <= SMALL_COMMIT:
                st.small_commit_lags.extend(lags.values())
            st.timeouts += len(expected) - len(lags)
            for query, doc_id, kind in _probes_for(writes, probes_per_commit):
                outcome = probe(driver.store, embedder, query, doc_id=doc_id, kind=kind, truth=truth, ignore=ignore, k=k)
                st.probes += 1
                if outcome.stale:
                    st.stale_hits += len(outcome.stale)
                    st.stale_examples.append({"commit": commit.sha[:10], "query": query[:120], "stale": outcome.stale[:3]})
                if outcome.found is False:
                    st.misses += 1
                    st.miss_examples.append({"commit": commit.sha[:10], "doc_id": doc_id, "query": query[:120]})
            driver.quiesce()
        if floor is not None and floor_for in measured_on:
            floor.measure(embedder, new_texts)
        if progress:
            progress(index - start + 1, end - start, {n: s.summary() for n, s in stats.items()})
    for driver in drivers:
        driver.finish()
    for driver in drivers:
        stats[driver.name].chunks_embedded = embedded_since(driver.store, replay_started)
    identical = None
    if len(drivers) > 1:
        states = [served_state(d.store) for d in drivers]
        identical = all(s == states[0] for s in states[1:])
    truth_hashes = state.truth()
    ignore = {doc_id_for(source_name, rel) for rel in state.skipped_paths}
    served = {d: h for d, h in served_state(drivers[0].store)[0].items() if d not in ignore}
    return {
        "history": str(history.directory),
        "commits": replayed,
        "bootstrap_commits": start,
        "bootstrap_seconds": round(bootstrap_s, 2),
        "files_changed": files_changed,
        "missing_blobs": state.missing_blobs,
        "chunks_changed": chunks_changed,
        "final_state_matches_history": served == truth_hashes,
        "drivers_identical": identical,
        "drivers": {n: s.summary() for n, s in stats.items()},
        "embed_floor": floor.summary() if floor is not None else None,
        "seconds": round(time.perf_counter() - began, 2),
    }
