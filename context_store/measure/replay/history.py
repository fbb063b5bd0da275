"""A documentation history and the replay's ground truth: which text every path holds after each commit.

A history is ``changes.jsonl`` (one commit per line, oldest first:
``{sha, date, subject, changes: [{status, path, old_path, blob}]}``) plus
``blobs.jsonl.gz`` (``{blob, text}``). ``ReplayState`` applies commits to its own copy of
the files and writes them into real folders; ``chunk_texts`` computes, with the store's own
parser and chunker but independently of the store, the chunks a text makes.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from context_store._common import sha256
from context_store.errors import ConfigError, InputRejected
from context_store.index.chunking import chunk_document
from context_store.settings import Settings
from context_store.state.documents import doc_id_for
from context_store.state.sources import COMPANY_SUFFIXES, is_ignored_name, parse_company_file

__all__ = ["Change", "Commit", "FileWrite", "History", "ReplayState", "chunk_hashes", "chunk_texts", "iter_commits"]

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


def iter_commits(history: History, start: int, count: int | None) -> Iterator[tuple[int, Commit]]:
    end = len(history) if count is None else min(len(history), start + count)
    for i in range(start, end):
        yield i, history.commits[i]
