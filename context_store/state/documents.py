"""Company state: scan sources, compare content hashes, write versions and tombstones.

Versioning only touches SQL; embedding and indexing happen afterwards for every document
whose ``current_version_id`` differs from its ``indexed_version_id`` (see ``context_store.index``).
That split is what makes a run killed half-way repairable: the next run simply finds the
documents that are still pending.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from context_store._common import sha256, utcnow
from context_store.errors import InputRejected, NotFound, SourceError
from context_store.settings import Settings, SourceConfig
from context_store.state.observed import record_observations
from context_store.state.roots import SourceRoots
from context_store.state.skipped_inputs import record_skip, resolve_skips
from context_store.state.sources import SourceFile, as_rejection, has_utf8_name, parse_company_file, read_source
from context_store.store.context_store import ContextStore
from context_store.store.database import bulk_update, in_batches, lineage_lock
from context_store.store.models import Document, DocumentVersion

__all__ = [
    "CompanySyncReport",
    "current_version_id",
    "current_version_ids",
    "doc_id_for",
    "doc_ids_for",
    "document_versions",
    "sync_company_sources",
    "version_id_for",
]

log = logging.getLogger(__name__)


@dataclass
class CompanySyncReport:
    seen: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    renamed: int = 0
    skipped: int = 0
    skipped_inputs: list[dict[str, str]] = field(default_factory=list)
    source_errors: list[str] = field(default_factory=list)
    changed_doc_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def doc_id_for(source_name: str, rel_path: str) -> str:
    return f"{source_name}/{rel_path}"


def doc_ids_for(settings: Settings, paths: Iterable[str | Path]) -> list[str]:
    """The document ids these files have (or will have once synced): ``<source>/<path inside it>``
    in the company source that holds each (``SourceRoots``); files no company source holds have none."""
    roots = SourceRoots.of(settings)
    ids = []
    for path in paths:
        held = roots.holder(path)
        if held is not None and held.state_kind == "company":
            ids.append(doc_id_for(held.source.name, held.rel_path(path)))
    return ids


def version_id_for(key: str, content_hash: str, valid_from: datetime) -> str:
    return "v-" + sha256(f"{key}\0{content_hash}\0{valid_from.isoformat()}")[:20]


def sync_company_sources(
    store: ContextStore,
    *,
    sources: list[SourceConfig] | None = None,
    paths: Iterable[str | Path] | None = None,
    now: datetime | None = None,
) -> CompanySyncReport:
    """Bring the document tables in line with the sources.

    ``paths`` limits the work to those files (the change-journal path); without it every
    file of every source is re-hashed and anything missing is tombstoned. A source whose
    root is missing is reported, and its documents are left alone: an unmounted folder is
    not "every file deleted". A file belongs to the source ``SourceRoots`` says holds it
    (the deepest root), so a folder nested in another source's is versioned once.
    """
    now = now or utcnow()
    report = CompanySyncReport()
    sources = store.settings.company_sources if sources is None else sources
    roots = SourceRoots(sources, store.settings.user_sources)
    wanted = None if paths is None else {Path(p).resolve() for p in paths}
    # Rows are written with bulk statements: a full re-sync of thousands of files must cost
    # little next to embedding them, and ORM objects per file do not.
    changes = _Changes()
    with store.session() as session:
        # Two ingests of one source must not both version the same change: the second waits,
        # then finds it already current (and the open-version index would refuse a twin).
        lineage_lock(session, "company")
        for source in sources:
            own = None if wanted is None else roots.owned("company", source, wanted)
            if own is None or own:
                _sync_source(session, store, roots, source, own, report, changes, now)
        changes.write(session, report, now)
    log.info(
        "company sync: %d seen, %d new, %d changed, %d deleted, %d skipped",
        report.seen, report.new, report.changed, report.deleted, report.skipped,
    )
    return report


def _sync_source(
    session: Session,
    store: ContextStore,
    roots: SourceRoots,
    source: SourceConfig,
    own: set[Path] | None,
    report: CompanySyncReport,
    changes: _Changes,
    now: datetime,
) -> None:
    """Version the files of one source (only ``own``, when given) and tombstone those gone."""
    root = Path(source.path).resolve()
    try:
        files = roots.list_files("company", source, own)
    except SourceError as exc:
        log.error("%s", exc)
        report.source_errors.append(str(exc))
        return
    # a path sync reads the rows of its own files only: a one-file change to a source of
    # 100,000 documents must not load (and stat) all of them. A name that is not UTF-8 is
    # no document (its file is rejected below), and no SQL parameter either.
    docs = _known_documents(
        session, source.name, None if own is None else [p.relative_to(root).as_posix() for p in own if has_utf8_name(p)]
    )
    present: set[str] = set()
    settled: list[str] = []  # paths read fine: any open skip record for them is resolved
    for f in files:
        present.add(f.rel_path)
        report.seen += 1
        if _sync_file(session, store, source, f, docs.get(f.rel_path), report, changes, now):
            settled.append(str(f.path))
    gone = {rel for rel, known in docs.items() if known.version_id is not None} - present
    if own is not None:  # asked-about files left unlisted (a link, say) are not gone while they exist
        gone = {rel for rel in gone if not (root / rel).exists()}
    for rel_path in sorted(gone):
        known = docs[rel_path]
        changes.close.append(known.version_id)
        changes.doc_updates.append({"doc_id": known.doc_id, "current_version_id": None, "deleted_at": now})
        changes.tombstoned[known.content_hash] = known.doc_id
        report.deleted += 1
        report.changed_doc_ids.append(known.doc_id)
    settled.extend(str(root / rel) for rel in gone)
    resolve_skips(session, state_kind="company", paths=settled, now=now)
    record_observations(session, "company", source, files, only=own, now=now)


@dataclass
class _Known:
    doc_id: str
    version_id: str | None
    content_hash: str | None


def _known_documents(session: Session, source_name: str, rel_paths: list[str] | None = None) -> dict[str, _Known]:
    """rel_path -> the document and its live version's hash (None when deleted), for every
    document of the source or those at ``rel_paths``; no texts loaded."""
    query = (
        select(Document.rel_path, Document.doc_id, Document.current_version_id, DocumentVersion.content_hash)
        .join(DocumentVersion, col(DocumentVersion.version_id) == col(Document.current_version_id), isouter=True)
        .where(Document.source_name == source_name)
    )
    if rel_paths is not None:  # by primary key: a document's id is its source and path
        ids = [doc_id_for(source_name, rel) for rel in rel_paths]
        parts = [query.where(col(Document.doc_id).in_(part)) for part in in_batches(ids)]
    else:
        parts = [query]
    return {rel: _Known(doc_id, vid, h) for part in parts for rel, doc_id, vid, h in session.exec(part).all()}


@dataclass
class _Changes:
    new_docs: list[dict[str, Any]] = field(default_factory=list)
    doc_updates: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    close: list[str] = field(default_factory=list)
    tombstoned: dict[str, str] = field(default_factory=dict)  # content hash -> doc id
    new_hashes: dict[str, str] = field(default_factory=dict)  # doc id -> content hash

    def write(self, session: Session, report: CompanySyncReport, now: datetime) -> None:
        # Close before insert: a document has at most one open version (uq_document_versions_open).
        for part in in_batches(self.close):
            session.execute(update(DocumentVersion).where(col(DocumentVersion.version_id).in_(part)).values(valid_to=now))
        if self.new_docs:
            session.execute(insert(Document.__table__), self.new_docs)
        if self.versions:
            session.execute(insert(DocumentVersion.__table__), self.versions)
        # A new document with the text of one deleted in the same sync is that document, moved.
        for doc_id, content_hash in self.new_hashes.items():
            old = self.tombstoned.pop(content_hash, None)
            if old is not None:
                self.doc_updates.append({"doc_id": doc_id, "renamed_from": old})
                report.renamed += 1
        bulk_update(session, Document, "doc_id", self.doc_updates)


def _sync_file(
    session: Session,
    store: ContextStore,
    source: SourceConfig,
    f: SourceFile,
    known: _Known | None,
    report: CompanySyncReport,
    changes: _Changes,
    now: datetime,
) -> bool:
    """Version one file; False when it was skipped (and the skip recorded)."""
    try:
        data = read_source(f, store.settings.max_file_bytes)
        content_hash = sha256(data)
        if known is not None and known.content_hash == content_hash:
            report.unchanged += 1
            return True
        parsed = parse_company_file(f.path, data)
    except Exception as exc:  # whatever one file raises is that file's skip; the other files sync
        if not isinstance(exc, InputRejected):
            log.warning("company file %s could not be parsed; skipped", f.where, exc_info=exc)
        rejected = as_rejection(f.where, exc)
        # The file stays skipped but whatever version we already hold keeps serving.
        record_skip(
            session, state_kind="company", source_name=source.name, path=f.where,
            reason=rejected.reason, detail=rejected.detail, now=now,
        )
        report.skipped += 1
        report.skipped_inputs.append({"path": f.where, "reason": rejected.reason, "detail": rejected.detail})
        return False
    doc_id = doc_id_for(source.name, f.rel_path)
    version_id = version_id_for(doc_id, parsed.content_hash, now)
    if known is None:
        changes.new_docs.append(
            {"doc_id": doc_id, "source_name": source.name, "rel_path": f.rel_path, "kind": source.kind,
             "current_version_id": version_id, "created_at": now}
        )
        changes.new_hashes[doc_id] = parsed.content_hash
        report.new += 1
    else:
        if known.version_id:
            changes.close.append(known.version_id)
            report.changed += 1
        else:
            report.new += 1  # a document that comes back after deletion
        changes.doc_updates.append({"doc_id": doc_id, "current_version_id": version_id, "deleted_at": None})
    changes.versions.append(
        {"version_id": version_id, "doc_id": doc_id, "content_hash": parsed.content_hash, "title": parsed.title,
         "text": parsed.text, "source_path": str(f.path), "source_mtime": f.mtime, "observed_at": now,
         "valid_from": now, "valid_to": None, "indexed_at": None, "chunk_count": None, "meta": parsed.meta or None}
    )
    report.changed_doc_ids.append(doc_id)
    return True


def document_versions(store: ContextStore, doc_id: str, *, as_of: datetime | None = None) -> list[DocumentVersion]:
    """Every version of ``doc_id``, oldest first; with ``as_of``, only the one valid then (maybe none).

    Raises ``NotFound`` for a document that never existed.
    """
    with store.session() as session:
        if session.get(Document, doc_id) is None:
            raise NotFound(f"unknown document {doc_id!r}")
        query = select(DocumentVersion).where(DocumentVersion.doc_id == doc_id)
        if as_of is not None:
            query = query.where(col(DocumentVersion.valid_from) <= as_of).where(
                (col(DocumentVersion.valid_to).is_(None)) | (col(DocumentVersion.valid_to) > as_of)
            )
        return list(session.exec(query.order_by(col(DocumentVersion.valid_from))).all())


def current_version_id(store: ContextStore, doc_id: str) -> str | None:
    """The version ``doc_id`` serves now (``None``: deleted, or unknown)."""
    with store.session() as session:
        doc = session.get(Document, doc_id)
        return doc.current_version_id if doc else None


def current_version_ids(store: ContextStore, doc_ids: Iterable[str]) -> dict[str, str | None]:
    """The version each of ``doc_ids`` serves now (``None``: deleted or unknown), in one read.

    What a watcher polls: a changed value is a new version or a tombstone of that document.
    """
    wanted = sorted(set(doc_ids))
    found: dict[str, str | None] = dict.fromkeys(wanted)
    with store.session() as session:
        for part in in_batches(wanted):
            rows = session.exec(select(Document.doc_id, Document.current_version_id).where(col(Document.doc_id).in_(part))).all()
            found.update({doc_id: version_id for doc_id, version_id in rows})
    return found
