"""handoff: routed question kind and transcript, trace conversation and history

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:44:24.103229

Numbered 0009 as assigned; ``kind`` and ``conversation_id`` may also arrive in the outcomes
branch's 0007 (the lead re-chains and reconciles them). Existing questions are escalations.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | Sequence[str] | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(table: str, *names: str) -> list[str]:
    """Columns not there yet: a database made by an older create_all from today's models already has them
    (SQLite has no ADD COLUMN IF NOT EXISTS)."""
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
    return [n for n in names if n not in have]


def upgrade() -> None:
    columns = {
        "conversation_id": sa.Column("conversation_id", sa.String(), nullable=True),
        "history": sa.Column("history", sa.JSON(), nullable=True),
        "kind": sa.Column("kind", sa.String(), nullable=False, server_default="escalation"),
        "transcript": sa.Column("transcript", sa.JSON(), nullable=True),
    }
    with op.batch_alter_table("retrieval_traces", schema=None) as batch_op:
        for name in _missing("retrieval_traces", "conversation_id", "history"):
            batch_op.add_column(columns[name])
        batch_op.create_index(batch_op.f("ix_retrieval_traces_conversation_id"), ["conversation_id"], unique=False, if_not_exists=True)

    with op.batch_alter_table("routed_questions", schema=None) as batch_op:
        for name in _missing("routed_questions", "kind", "transcript"):
            batch_op.add_column(columns[name])
        batch_op.create_index(batch_op.f("ix_routed_questions_kind"), ["kind"], unique=False, if_not_exists=True)


def downgrade() -> None:
    with op.batch_alter_table("routed_questions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_routed_questions_kind"))
        batch_op.drop_column("transcript")
        batch_op.drop_column("kind")

    with op.batch_alter_table("retrieval_traces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retrieval_traces_conversation_id"))
        batch_op.drop_column("history")
        batch_op.drop_column("conversation_id")
