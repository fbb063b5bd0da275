"""Request and response models of the ``/v1`` API (they are the OpenAPI documentation)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CompanyResult",
    "DocumentPublic",
    "DocumentVersionPublic",
    "DocumentVersions",
    "HandoffRequest",
    "HandoffResponse",
    "OutcomeIn",
    "OutcomePublic",
    "ReasonPublic",
    "RetrieveRequest",
    "RetrieveResponse",
    "Turn",
    "UserFactPublic",
    "UserStatePublic",
]


class Turn(BaseModel):
    """One turn of the conversation (sizes are checked by the core: ``context_store.route.transcript``)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "agent", "assistant", "staff", "system"] = Field(description="Who spoke.")
    text: str = Field(description="What was said (at most 8,000 characters).")
    at: datetime | None = Field(default=None, description="When (ISO-8601).")


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"query": "how do refunds work", "user_id": "u-1001", "k": 5}]})

    query: str = Field(description="The customer's question (1-2000 characters).")
    user_id: str | None = Field(default=None, description="Add this user's current state; never anyone else's.")
    k: int = Field(default=5, description="How many company chunks (1-100).")
    as_of: str | None = Field(default=None, description="ISO-8601 time: answer from the knowledge base as it was then.")
    filters: dict[str, Any] | None = Field(default=None, description='Restrict company results: {"kinds": [...], "sources": [...], "doc_ids": [...]}.')
    mode: Literal["hybrid", "vector", "text", "rrf"] | None = Field(default=None, description="Override the server's retrieval mode.")
    conversation_id: str | None = Field(default=None, max_length=200, description="The agent's conversation id: kept with a routed question; earlier turns of it are not repeat contacts.")
    history: list[Turn] | None = Field(default=None, description="The conversation's last turns (at most 50): kept with the trace and shown to staff if the question is escalated.")


class CompanyResult(BaseModel):
    text: str
    doc_id: str
    version_id: str
    chunk_id: str
    title: str
    heading: str
    source_path: str
    kind: str
    score: float
    vector_score: float | None
    text_score: float | None
    source_changed_at: datetime | None
    indexed_at: datetime | None
    age_seconds: float | None = Field(description="Time since the source last changed, at serving time.")
    current: bool = Field(description="False only for as_of results whose version has since been superseded.")
    valid_from: datetime | None = None
    valid_to: datetime | None = Field(default=None, description="When this version was superseded (as_of results).")


class UserFactPublic(BaseModel):
    key: str
    text: str
    score: float


class UserStatePublic(BaseModel):
    user_id: str
    snapshot_version_id: str
    captured_at: datetime | None
    age_seconds: float | None
    max_age_hours: float
    stale: bool
    facts: list[UserFactPublic]


class ReasonPublic(BaseModel):
    code: str
    detail: str
    source: str
    score: float | None = Field(default=None, description="The similarity or age that fired a routing trigger.")


class RoutedQuestionRef(BaseModel):
    question_id: str
    grouped: bool = Field(description="Joined an open near-duplicate instead of queueing a new question.")
    similarity: float
    ask_count: int


class RetrieveResponse(BaseModel):
    trace_id: str
    query: str
    mode: str
    k: int
    as_of: datetime | None
    served_at: datetime
    results: list[CompanyResult]
    user: UserStatePublic | None
    confidence: float = Field(ge=0.0, le=1.0)
    confidence_source: str = Field(description='"calibrator (<dataset>)" or "conservative default".')
    threshold: float
    decision: Literal["answer", "escalate"]
    reasons: list[ReasonPublic]
    routed_question: RoutedQuestionRef | None = Field(default=None, description="Set when the question was escalated to staff.")
    timings_ms: dict[str, float]


class DocumentVersionPublic(BaseModel):
    version_id: str
    content_hash: str
    title: str
    source_path: str
    valid_from: datetime
    valid_to: datetime | None
    observed_at: datetime
    source_mtime: datetime | None
    indexed_at: datetime | None
    chunk_count: int | None
    current: bool
    text: str | None = None


class DocumentVersions(BaseModel):
    doc_id: str
    as_of: datetime | None
    versions: list[DocumentVersionPublic]


class HandoffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "conversation_id": "c-42", "user_id": "u-1001", "reason": "the user asked for a person",
        "transcript": [{"role": "user", "text": "my parcel never came", "at": "2026-12-01T10:00:00Z"},
                       {"role": "agent", "text": "It shipped on Monday with DHL.", "at": "2026-12-01T10:00:05Z"}],
    }]})

    conversation_id: str = Field(description="The agent's conversation id; a second press in it joins the open hand-off.")
    user_id: str | None = Field(default=None, description="Add this user's current state to the working memory.")
    reason: str = Field(description="Why a person is needed (1-2000 characters).")
    transcript: list[Turn] = Field(description="The conversation so far, oldest first (1-200 turns, 100,000 characters in all).")


class HandoffResponse(BaseModel):
    question_id: str
    kind: Literal["handoff"]
    joined: bool = Field(description="True when this press joined the conversation's open hand-off.")
    ask_count: int
    status: str
    conversation_id: str
    trace_id: str | None = Field(description="The conversation's last response, whose context the person sees.")


class DocumentPublic(BaseModel):
    """One version of a document, with its text: now, or as it was at ``as_of``."""

    doc_id: str
    version_id: str
    title: str
    text: str
    source_path: str
    valid_from: datetime
    valid_to: datetime | None = Field(description="When this version was superseded (None: it is current).")
    current: bool
    age_seconds: float = Field(description="How long ago this version became valid.")
    as_of: datetime | None = None


class OutcomeIn(BaseModel):
    """Types only: the values (outcome, CSAT range, thumbs, times) are checked by ``route.record_outcome``,
    so the API, the CLI and the benchmark refuse the same things with the same codes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"event_id": "evt-123", "trace_id": "tr-0123abcd", "outcome": "resolved", "csat": 5, "thumbs": "up"}]})

    event_id: str = Field(description="Your idempotency key: a repeat returns the first result and stores nothing.")
    trace_id: str | None = Field(default=None, description="The response the outcome is about (from /v1/retrieve).")
    conversation_id: str | None = Field(default=None, description="Or the conversation: its latest response at `at`.")
    outcome: str = Field(description="resolved | unresolved | reopened | escalated_by_user | abandoned")
    csat: int | None = Field(default=None, description="Customer satisfaction, 1-5.")
    thumbs: str | None = Field(default=None, description="up | down")
    note: str | None = None
    at: str | None = Field(default=None, description="ISO-8601 time it happened (default: now); not before the response, not in the future.")


class OutcomePublic(BaseModel):
    event_id: str
    trace_id: str
    conversation_id: str | None
    outcome: str
    source: str = Field(description="platform (reported) or derived (a repeat contact freshcontext saw).")
    csat: int | None
    thumbs: str | None
    note: str | None
    at: datetime
    recorded_at: datetime
    review_question_id: str | None = Field(description="The review this outcome opened (a bot answer that failed).")
    duplicate: bool = Field(description="True when this event_id was stored before: nothing was stored now.")
