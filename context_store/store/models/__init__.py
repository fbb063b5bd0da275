"""SQLModel tables: the system of record. LanceDB only ever holds a projection of these.

One module per subject: ``knowledge`` (documents, versions, chunks, the embedding cache,
users and their snapshots, skipped inputs), ``operations`` (runs, locks, the change
journal, lag timelines, evaluations, deployments, promotions) and ``conversation``
(questions asked and routed, staff answers, webhooks, the outbox, traces). Importing this
package registers every table on ``SQLModel.metadata``, which the Alembic environment and
``create_schema`` rely on; import the tables from here, not from the modules.
"""

from __future__ import annotations

from context_store.store.models.conversation import (
    AskedQuestion,
    OutboxMessage,
    Outcome,
    QuestionAsk,
    RetrievalTrace,
    RoutedQuestion,
    StaffAnswer,
    StaffSession,
    WebhookDelivery,
)
from context_store.store.models.knowledge import (
    ArchivedChunk,
    ChunkRecord,
    Document,
    DocumentVersion,
    EmbeddingCacheEntry,
    SkippedInput,
    UserRecord,
    UserSnapshotVersion,
)
from context_store.store.models.operations import (
    ChangeEvent,
    EvaluationRun,
    IndexDeployment,
    IngestRun,
    LineageLock,
    PromotionDecision,
    SourceObservation,
    VersionLag,
)

__all__ = [
    "ArchivedChunk",
    "AskedQuestion",
    "ChangeEvent",
    "ChunkRecord",
    "Document",
    "DocumentVersion",
    "EmbeddingCacheEntry",
    "EvaluationRun",
    "IndexDeployment",
    "IngestRun",
    "LineageLock",
    "OutboxMessage",
    "Outcome",
    "PromotionDecision",
    "QuestionAsk",
    "RetrievalTrace",
    "RoutedQuestion",
    "SkippedInput",
    "SourceObservation",
    "StaffAnswer",
    "StaffSession",
    "UserRecord",
    "UserSnapshotVersion",
    "VersionLag",
    "WebhookDelivery",
]
