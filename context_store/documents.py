"""Company state: scan sources, compare content hashes, write versions and tombstones.

Versioning only touches SQL; embedding and indexing happen afterwards for every document
whose ``current_version_id`` differs from its ``indexed_version_id`` (see ``indexing``).
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

from sqlmodel import Session, col, select

from context_store.database import lineage_lock
from context_store.errors import InputRejected, SourceError
from context_store.models import Document, DocumentVersion, utcnow
from context_store.settings import SourceConfig
from context_store.skipped_inputs import record_skip, resolve_skips
from context_store.sources import SourceFile, list_source_files, parse_company_file, read_bytes, sha256
from context_store.store import ContextStore

__all__ = ["CompanySyncReport", "doc_id_for", "sync_company_sources", "version_id_for"]

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
    not "every file deleted".
    """
    now = now or utcnow()
    report = CompanySyncReport()
    sources = store.settings.company_sources if sources is None else sources
    wanted = None if paths is None else {Path(p).resolve() for p in paths}
    with store.session() as session:
        # Two ingests of one source must not both version the same change: the second waits,
        # then finds it already current (and the open-version index would refuse a twin).
        lineage_lock(session, "company")
        created: list[tuple[Document, DocumentVersion]] = []
        tombstoned: list[tuple[Document, str]] = []
        for source in sources:
            root = Path(source.path).resolve()
            if wanted is not None and not any(_is_within(p, root) for p in wanted):
                continue
            try:
                files = list_source_files(source)
            except SourceError as exc:
                log.error("%s", exc)
                report.source_errors.append(str(exc))
                continue
            if wanted is not None:
                files = [f for f in files if f.path.resolve() in wanted]
            current = _current_versions(session, source.name)
            present: set[str] = set()
            for f in files:
                present.add(f.rel_path)
                report.seen += 1
                _sync_file(session, store, source, f, current.get(f.rel_path), report, created, now)
            gone = set(current) - present
            if wanted is not None:  # only files we were asked about can be declared gone
                gone = {rel for rel in gone if (root / rel).resolve() in wanted and not (root / rel).exists()}
            for rel_path in sorted(gone):
                doc_id = doc_id_for(source.name, rel_path)
                _, version_id, content_hash = current[rel_path]
                doc = session.get(Document, doc_id)
                version = session.get(DocumentVersion, version_id)
                if doc is None or version is None:
                    continue
                version.valid_to = now
                doc.current_version_id = None
                doc.deleted_at = now
                session.add_all([doc, version])
                tombstoned.append((doc, content_hash))
                report.deleted += 1
                report.changed_doc_ids.append(doc_id)
            resolve_skips(session, state_kind="company", paths=[str(root / rel) for rel in gone], now=now)
        _link_renames(session, created, tombstoned, report)
    log.info(
        "company sync: %d seen, %d new, %d changed, %d deleted, %d skipped",
        report.seen, report.new, report.changed, report.deleted, report.skipped,
    )
    return report


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _current_versions(session: Session, source_name: str) -> dict[str, tuple[str, str, str]]:
    """rel_path -> (doc_id, version_id, content_hash) of each live document; no texts loaded."""
    rows = session.exec(
        select(Document.rel_path, Document.doc_id, DocumentVersion.version_id, DocumentVersion.content_hash)
        .join(DocumentVersion, col(DocumentVersion.version_id) == col(Document.current_version_id))
        .where(Document.source_name == source_name)
    ).all()
    return {rel: (doc_id, vid, h) for rel, doc_id, vid, h in rows}


def _sync_file(
    session: Session,
    store: ContextStore,
    source: SourceConfig,
    f: SourceFile,
    current: tuple[str, str, str] | None,
    report: CompanySyncReport,
    created: list[tuple[Document, DocumentVersion]],
    now: datetime,
) -> None:
    try:
        data = read_bytes(f.path, store.settings.max_file_bytes)
        content_hash = sha256(data)
        if current is not None and current[2] == content_hash:
            report.unchanged += 1
            resolve_skips(session, state_kind="company", paths=[str(f.path)], now=now)
            return
        parsed = parse_company_file(f.path, data)
    except InputRejected as exc:
        # The file stays skipped but whatever version we already hold keeps serving.
        record_skip(
            session, state_kind="company", source_name=source.name, path=str(f.path),
            reason=exc.reason, detail=exc.detail, now=now,
        )
        report.skipped += 1
        report.skipped_inputs.append({"path": str(f.path), "reason": exc.reason, "detail": exc.detail})
        return
    doc_id = doc_id_for(source.name, f.rel_path)
    doc = session.get(Document, doc_id)
    if doc is None:
        doc = Document(doc_id=doc_id, source_name=source.name, rel_path=f.rel_path, kind=source.kind, created_at=now)
        report.new += 1
    else:
        if doc.current_version_id:
            old = session.get(DocumentVersion, doc.current_version_id)
            if old is not None:
                old.valid_to = now
                session.add(old)
            report.changed += 1
        else:
            report.new += 1  # a document that comes back after deletion
        doc.deleted_at = None
    version = DocumentVersion(
        version_id=version_id_for(doc_id, parsed.content_hash, now),
        doc_id=doc_id,
        content_hash=parsed.content_hash,
        title=parsed.title,
        text=parsed.text,
        source_path=str(f.path),
        source_mtime=f.mtime,
        observed_at=now,
        valid_from=now,
        meta=parsed.meta or None,
    )
    doc.current_version_id = version.version_id
    session.add(doc)
    session.add(version)
    session.flush()
    created.append((doc, version))
    report.changed_doc_ids.append(doc_id)
    resolve_skips(session, state_kind="company", paths=[str(f.path)], now=now)


def _link_renames(
    session: Session,
    created: list[tuple[Document, DocumentVersion]],
    tombstoned: list[tuple[Document, str]],
    report: CompanySyncReport,
) -> None:
    """A new document with the text of one deleted in the same sync is that document, moved."""
    by_hash = {content_hash: doc for doc, content_hash in tombstoned}
    for doc, version in created:
        old = by_hash.pop(version.content_hash, None)
        if old is not None and doc.renamed_from is None:
            doc.renamed_from = old.doc_id
            session.add(doc)
            report.renamed += 1
