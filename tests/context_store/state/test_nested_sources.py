"""A source inside another source's folder: the deepest root holds the file, whoever asks."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from context_store.index.embed.fake import HashingEmbedder
from context_store.learn.answers import index_answers
from context_store.state import journal
from context_store.state.documents import doc_ids_for, sync_company_sources
from context_store.state.roots import SourceRoots, source_for
from context_store.store.context_store import ContextStore
from context_store.store.models import Document

ANSWER = "---\nkind: staff_answer\n---\n# Do you ship to Iceland?\n\nYes, in five to seven working days.\n"


@pytest.fixture
def nested(sources: dict[str, Path]) -> ContextStore:
    """The staff-answer source is a folder inside the company source, and configured after it."""
    staff = sources["company"] / "staff"
    staff.mkdir()
    (staff / "q-1.md").write_text(ANSWER)
    return ContextStore.open(
        sources["home"],
        company_sources=[{"name": "company", "path": str(sources["company"])},
                         {"name": "staff", "path": str(staff), "kind": "staff_answer"}],
        user_sources=[{"name": "users", "path": str(sources["users"])}],
    )


def _doc_ids(store: ContextStore) -> set[str]:
    with store.session() as s:
        return set(s.exec(select(Document.doc_id).where(Document.current_version_id.is_not(None))).all())  # type: ignore[union-attr]


def test_the_deepest_root_holds_a_file(nested: ContextStore, sources: dict[str, Path]) -> None:
    inner, outer = sources["company"] / "staff" / "q-1.md", sources["company"] / "refunds.md"
    held = source_for(nested.settings, inner)
    assert held is not None and (held.state_kind, held.source.name, held.rel_path(inner)) == ("company", "staff", "q-1.md")
    assert source_for(nested.settings, outer).source.name == "company"  # type: ignore[union-attr]
    assert source_for(nested.settings, sources["home"] / "elsewhere.md") is None
    roots = SourceRoots.of(nested.settings)
    company, staff = nested.settings.company_sources
    assert roots.holds("company", staff, inner) and not roots.holds("company", company, inner)


def test_the_journal_names_the_inner_source(nested: ContextStore, sources: dict[str, Path]) -> None:
    entry = journal.entry_for_path(nested.settings, sources["company"] / "staff" / "q-1.md")
    assert entry is not None and (entry.state_kind, entry.source_name) == ("company", "staff")


def test_a_sync_versions_the_file_once_under_the_inner_source(nested: ContextStore, sources: dict[str, Path]) -> None:
    report = sync_company_sources(nested)
    assert _doc_ids(nested) == {"company/refunds.md", "company/billing/invoices.md", "staff/q-1.md"}
    assert report.seen == 3 and report.skipped == 0
    inner = sources["company"] / "staff" / "q-1.md"
    inner.write_text(ANSWER.replace("five to seven", "four to six"))
    report = sync_company_sources(nested, paths=[inner])  # the change-journal path
    assert report.changed_doc_ids == ["staff/q-1.md"] and report.seen == 1
    inner.unlink()
    assert sync_company_sources(nested, paths=[inner]).changed_doc_ids == ["staff/q-1.md"]
    assert _doc_ids(nested) == {"company/refunds.md", "company/billing/invoices.md"}


def test_a_staff_answer_is_indexed_under_the_inner_sources_document(
    nested: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    inner = sources["company"] / "staff" / "q-1.md"
    assert doc_ids_for(nested.settings, [inner, sources["company"] / "refunds.md"]) == ["staff/q-1.md", "company/refunds.md"]
    sync_company_sources(nested)  # versioned, not indexed: the answer's own pass must find it by its id
    index_answers(nested, fake_embedder, [inner])
    with nested.session() as s:
        answer = s.get(Document, "staff/q-1.md")
        assert answer is not None and answer.indexed_version_id == answer.current_version_id
        assert s.get(Document, "company/staff/q-1.md") is None
        refunds = s.get(Document, "company/refunds.md")
        assert refunds is not None and refunds.indexed_version_id is None  # not its own: left to the ingest
