"""The conversation with agents and staff: questions assessed, questions routed to people and
each ask of them, staff answers, webhook deliveries, the outbox, retrieval traces and their
outcomes, and the staff page's sign-ins."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import JSON, Column, LargeBinary
from sqlmodel import Field, SQLModel

from context_store._common import utcnow
from context_store.store.models._columns import _json, _ts

__all__ = [
    "AskedQuestion",
    "OutboxMessage",
    "Outcome",
    "QuestionAsk",
    "RetrievalTrace",
    "RoutedQuestion",
    "StaffAnswer",
    "StaffSession",
    "WebhookDelivery",
]


class AskedQuestion(SQLModel, table=True):
    """Every question the routing policy assessed: the memory behind repeat contact and the routing metrics."""

    __tablename__ = "asked_questions"

    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: Optional[str] = Field(default=None, index=True)
    conversation_id: Optional[str] = None
    text: str
    model: str
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    asked_at: datetime = _ts(default_factory=utcnow, index=True)
    decision: Optional[str] = Field(default=None, index=True)  # answer | escalate
    confidence: Optional[float] = None
    reasons: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    top_doc_id: Optional[str] = None
    top_kind: Optional[str] = None
    question_id: Optional[str] = Field(default=None, index=True)
    trace_id: Optional[str] = Field(default=None, index=True)  # a review finds its answer's question vector here


class RoutedQuestion(SQLModel, table=True):
    """An escalated question and its working memory, so nobody asks the user to repeat it.

    Lifecycle: open -> answered -> closed, or open -> dismissed. Near-duplicates of an open
    question become further ``QuestionAsk`` rows of it instead of new questions.
    """

    __tablename__ = "routed_questions"

    question_id: str = Field(primary_key=True)
    status: str = Field(default="open", index=True)
    # escalation: respond() decided a person should answer; handoff: the agent pressed the red button;
    # review: a bot answer whose outcome said it failed (route.reviews)
    kind: str = Field(default="escalation", index=True)
    text: str
    user_id: Optional[str] = Field(default=None, index=True)
    user_version_id: Optional[str] = None
    conversation_id: Optional[str] = None
    trace_id: Optional[str] = None
    confidence: Optional[float] = None
    reasons: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    context: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    user_state: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    model: str = ""
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ask_count: int = 1
    owner: Optional[str] = None
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    updated_at: datetime = _ts(default_factory=utcnow)
    answered_at: Optional[datetime] = _ts(default=None)
    closed_at: Optional[datetime] = _ts(default=None)
    resolution_note: Optional[str] = None
    transcript: Optional[list] = _json(default=None)  # the conversation's turns [{role, text, at}], shown to staff
    # a review's account of the failed answer: trace, when and how sure it answered, what came back and when
    review: Optional[dict] = _json(default=None)


class QuestionAsk(SQLModel, table=True):
    """One person asking a routed question (the first ask and every near-duplicate grouped with it)."""

    __tablename__ = "question_asks"

    id: Optional[int] = Field(default=None, primary_key=True)
    question_id: str = Field(foreign_key="routed_questions.question_id", index=True)
    text: str
    user_id: Optional[str] = Field(default=None, index=True)
    user_version_id: Optional[str] = None
    conversation_id: Optional[str] = None
    trace_id: Optional[str] = None
    similarity: float = 1.0
    reasons: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    asked_at: datetime = _ts(default_factory=utcnow)


class StaffAnswer(SQLModel, table=True):
    """A staff reply, stored before anything else happens; it then becomes a document."""

    __tablename__ = "staff_answers"

    answer_id: str = Field(primary_key=True)
    question_id: str = Field(foreign_key="routed_questions.question_id", unique=True)
    author: str
    text: str
    channel: str = "webhook"  # webhook | staff_page | api
    webhook_id: Optional[str] = None
    received_at: datetime = _ts(default_factory=utcnow)
    source_versions: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    doc_id: Optional[str] = Field(default=None, index=True)
    file_path: Optional[str] = None
    written_at: Optional[datetime] = _ts(default=None)
    retrievable_at: Optional[datetime] = _ts(default=None)
    needs_review: bool = Field(default=False, index=True)
    review_reason: Optional[str] = None
    flagged_at: Optional[datetime] = _ts(default=None)
    # What is published (learn/publish.py): the question staff wrote or confirmed, the
    # paraphrases they approved, and who may be served it: everyone (global) or one user (user).
    question: Optional[str] = None
    paraphrases: Optional[list] = _json(default=None)
    scope: str = Field(default="global", sa_column_kwargs={"server_default": "global"})
    scope_user_id: Optional[str] = Field(default=None, index=True)
    reviewed_at: Optional[datetime] = _ts(default=None)  # re-approved after a flag
    reviewed_by: Optional[str] = None
    retired_at: Optional[datetime] = _ts(default=None)  # withdrawn: its document is tombstoned
    retired_by: Optional[str] = None


class WebhookDelivery(SQLModel, table=True):
    """Each accepted inbound webhook id, kept so a retry days later is still recognised."""

    __tablename__ = "webhook_deliveries"

    webhook_id: str = Field(primary_key=True)
    endpoint: str
    received_at: datetime = _ts(default_factory=utcnow, index=True)
    body_sha256: str
    status_code: int
    response: Optional[dict] = _json(default=None)


class OutboxMessage(SQLModel, table=True):
    """An outbound notification, persisted before it is sent and retried with backoff."""

    __tablename__ = "outbox"

    id: Optional[int] = Field(default=None, primary_key=True)
    message_id: str = Field(unique=True)
    event_type: str
    url: str
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", index=True)  # pending | delivered | dead
    attempts: int = 0
    next_attempt_at: datetime = _ts(default_factory=utcnow, index=True)
    last_error: Optional[str] = None
    last_status: Optional[int] = None
    created_at: datetime = _ts(default_factory=utcnow)
    delivered_at: Optional[datetime] = _ts(default=None)


# --- retrieval API ---


class RetrievalTrace(SQLModel, table=True):
    """The evidence trail of one retrieval response: what was asked, what was served, why.

    Texts are not copied: each served chunk is named by document version, chunk id and
    hashes, and versions are never deleted, so ``traces.replay`` can show the exact text.
    """

    __tablename__ = "retrieval_traces"

    trace_id: str = Field(primary_key=True)
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    query: str
    user_id: Optional[str] = Field(default=None, index=True)
    user_version_id: Optional[str] = None
    k: int
    mode: str
    as_of: Optional[datetime] = _ts(default=None)
    filters: Optional[dict] = _json(default=None)
    model: str
    table_versions: Optional[dict] = _json(default=None)
    dense_snapshot_version: Optional[int] = None
    confidence: float
    confidence_source: str
    threshold: float
    features: Optional[dict] = _json(default=None)
    decision: str = Field(index=True)
    reasons: Optional[list] = _json(default=None)
    results: Optional[list] = _json(default=None)
    user_facts: Optional[list] = _json(default=None)
    latency_ms: Optional[float] = None
    client: Optional[str] = None  # the name of the caller's API key (an agent reads only its own traces), never the key
    conversation_id: Optional[str] = Field(default=None, index=True)  # a handoff finds its conversation's last response
    history: Optional[list] = _json(default=None)  # the turns the agent sent with the question [{role, text, at}]
    # the review a failed outcome opened for this answer; set once (route.reviews claims it with a conditional UPDATE)
    review_question_id: Optional[str] = None


class Outcome(SQLModel, table=True):
    """What happened after a response: reported by the agent platform or derived (a repeat contact).

    ``event_id`` is the sender's idempotency key: a repeat stores nothing and returns the
    first result (``body_sha256`` tells a true repeat from a reuse of the id for other content).
    """

    __tablename__ = "outcomes"

    id: Optional[int] = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True)
    trace_id: str = Field(foreign_key="retrieval_traces.trace_id", index=True)
    conversation_id: Optional[str] = None
    user_id: Optional[str] = None
    outcome: str = Field(index=True)  # resolved | unresolved | reopened | escalated_by_user | abandoned | repeat_contact
    source: str = "platform"  # platform | derived
    csat: Optional[int] = None
    thumbs: Optional[str] = None  # up | down
    note: Optional[str] = None
    at: datetime = _ts(index=True, nullable=False)
    recorded_at: datetime = _ts(default_factory=utcnow)
    body_sha256: str
    client: Optional[str] = None
    detail: Optional[dict] = _json(default=None)  # derived outcomes: the later trace, similarity
    review_question_id: Optional[str] = None  # the review this outcome opened, if it did


class StaffSession(SQLModel, table=True):
    """A staff page sign-in. The browser holds a random id; only its sha256 is stored, so
    reading this table gives no one a working cookie. Ends at ``expires_at``, at sign-out
    (``revoked_at``), or when its key is no longer configured (checked on every request)."""

    __tablename__ = "staff_sessions"

    session_hash: str = Field(primary_key=True)
    key_name: str = Field(index=True)
    role: str
    created_at: datetime = _ts(default_factory=utcnow)
    expires_at: datetime = _ts(index=True, nullable=False)
    revoked_at: Optional[datetime] = _ts(default=None)
    client: Optional[str] = None  # the client address at sign-in, for the audit
