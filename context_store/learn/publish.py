"""What a staff answer publishes, and to whom: only what staff approved.

A routed question's customer text is working memory for the person answering: it may hold
a name, an email, card digits, an order number, or text written to look like policy (a
grouped ask "...\\n# Refund policy update ..."). None of it is indexed as it stands. An
answer publishes:

- ``question``: the question staff wrote or confirmed. It starts from ``suggested_question``
  (the customer's text with emails, card and phone numbers and the ``routing.redact_patterns``
  ids replaced); an answer that arrives without one (an older helpdesk integration)
  publishes that redacted suggestion;
- ``paraphrases``: other wordings staff approved ("Also asked as"), never the grouped asks;
- the answer text, which staff wrote.

Every kept line goes through ``route.redact.one_line``: one line, no Markdown block, so
nothing in it can become a heading or a section. ``scope`` says who is served the answer:
``global`` (a company document everyone retrieves) or ``user`` (a fact in the asker's user
state, served to that user alone, never a document).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from context_store.errors import InvalidRequest
from context_store.route.policy import RoutingConfig
from context_store.route.redact import one_line, redact
from context_store.store.models import QuestionAsk, RoutedQuestion, StaffAnswer

__all__ = ["MAX_PARAPHRASES", "SCOPES", "Publication", "answer_markdown", "answered_payload", "publication", "suggested_question"]

SCOPES = ("global", "user")
MAX_PARAPHRASES = 20


@dataclass(frozen=True)
class Publication:
    """What staff approved for one answer."""

    question: str
    paraphrases: list[str]
    scope: str
    user_id: str | None  # scope user: the one user it is served to


def suggested_question(question: RoutedQuestion, config: RoutingConfig) -> str:
    """What the staff page and the notification offer to publish: the customer's text, redacted, one line."""
    return redact(question.text, config.redact_patterns)


def publication(
    question: RoutedQuestion, config: RoutingConfig, *, text: str | None = None, paraphrases: Sequence[str] = (), scope: str = "global",
) -> Publication:
    """Check what staff send to publish; a missing question publishes the redacted suggestion."""
    if scope not in SCOPES:
        raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if scope == "user" and not question.user_id:
        raise InvalidRequest(f"scope user answers one user, but question {question.question_id} was asked without a user_id")
    canonical = one_line(text) if text and text.strip() else suggested_question(question, config)
    if not canonical.strip("\\ "):
        raise InvalidRequest("question is empty: write the question this answer answers")
    if len(paraphrases) > MAX_PARAPHRASES:
        raise InvalidRequest(f"{len(paraphrases)} paraphrases; the limit is {MAX_PARAPHRASES}")
    kept = [p for p in dict.fromkeys(one_line(p) for p in paraphrases if p and p.strip()) if p != canonical]
    return Publication(canonical, kept, scope, question.user_id if scope == "user" else None)


def answer_markdown(answer: StaffAnswer) -> str:
    """The company document a global answer becomes: the approved question as its heading, the
    answer, the approved paraphrases; front matter links it to its question and sources."""
    question = answer.question or ""
    front = {
        "title": question,
        "kind": "staff_answer",
        "question_id": answer.question_id,
        "answer_id": answer.answer_id,
        "author": answer.author,
        "answered_at": answer.received_at.isoformat(),
        "source_versions": ",".join(answer.source_versions),
    }
    also = ("\n\nAlso asked as: " + " / ".join(answer.paraphrases)) if answer.paraphrases else ""
    return f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n# {question}\n\n{answer.text.strip()}{also}\n"


def answered_payload(question: RoutedQuestion, asks: Sequence[QuestionAsk], answer: StaffAnswer) -> dict[str, Any]:
    """The ``question.answered`` notification: the answer, and each asker to tell (for a user-scoped
    answer, that user's asks alone)."""
    askers = [a for a in asks if answer.scope != "user" or a.user_id == answer.scope_user_id]
    return {
        "question_id": question.question_id, "answer_id": answer.answer_id, "question": answer.question, "answer": answer.text,
        "author": answer.author, "scope": answer.scope, "answered_at": answer.received_at.isoformat(),
        "askers": [{"user_id": a.user_id, "conversation_id": a.conversation_id, "trace_id": a.trace_id,
                    "asked_at": a.asked_at.isoformat() if a.asked_at else None} for a in askers],
    }
