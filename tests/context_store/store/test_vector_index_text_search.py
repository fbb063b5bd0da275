"""LanceDB full-text search takes a question's words literally, whatever punctuation it carries."""

from __future__ import annotations

import pytest

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.store.context_store import ContextStore


@pytest.fixture
def indexed(store: ContextStore) -> ContextStore:
    ingest(store, HashingEmbedder())
    return store


def _docs(store: ContextStore, question: str, where: str | None = None) -> list[str]:
    rows = store.index.text_search(store.index.company_table_name, question, 5, where=where, columns=["doc_id"])
    return [r["doc_id"] for r in rows]


@pytest.mark.parametrize("question", ['"refund window"', 'What is the "refund window"?', '"refund'])
def test_a_quoted_question_is_matched_word_by_word(indexed: ContextStore, question: str) -> None:
    # a whole question in quotes used to become a phrase query, which the position-less index refused
    assert _docs(indexed, question)[0] == "company/refunds.md"


def test_parentheses_colons_and_operators_are_plain_text(indexed: ContextStore) -> None:
    assert _docs(indexed, "invoices (PDF): where? title:billing AND -history")[0] == "company/billing/invoices.md"
    assert _docs(indexed, "(refund) [window] {30} ^2 ~days*", where="kind = 'article'")[0] == "company/refunds.md"
    assert _docs(indexed, '"') == []
