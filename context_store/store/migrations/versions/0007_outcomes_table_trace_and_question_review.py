"""outcomes: the outcomes table, a trace's review, a routed question's review

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-04 17:43:01.500050

Numbered 0007 as assigned and chained in number order (0005 -> 0007 -> 0008 -> 0009), so the next
revision is head + 1. It needs ``routed_questions.kind`` and ``retrieval_traces.conversation_id``,
which 0009 adds: the code uses them only once the database is at head. A database already
upgraded to 0009 before this revision existed would not get it (Alembic counts it as applied);
the lead re-chains at merge.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(table: str, *columns: str) -> list[str]:
    # a database whose tables were made by an older create_all from today's models has them already
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
    return [c for c in columns if c not in present]


def upgrade() -> None:
    op.create_table('outcomes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(), nullable=False),
    sa.Column('trace_id', sa.String(), nullable=False),
    sa.Column('conversation_id', sa.String(), nullable=True),
    sa.Column('user_id', sa.String(), nullable=True),
    sa.Column('outcome', sa.String(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('csat', sa.Integer(), nullable=True),
    sa.Column('thumbs', sa.String(), nullable=True),
    sa.Column('note', sa.String(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('body_sha256', sa.String(), nullable=False),
    sa.Column('client', sa.String(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.Column('review_question_id', sa.String(), nullable=True),
    sa.ForeignKeyConstraint(['trace_id'], ['retrieval_traces.trace_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id'),
    if_not_exists=True
    )
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outcomes_at'), ['at'], unique=False, if_not_exists=True)
        batch_op.create_index(batch_op.f('ix_outcomes_outcome'), ['outcome'], unique=False, if_not_exists=True)
        batch_op.create_index(batch_op.f('ix_outcomes_trace_id'), ['trace_id'], unique=False, if_not_exists=True)

    with op.batch_alter_table('asked_questions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_asked_questions_trace_id'), ['trace_id'], unique=False, if_not_exists=True)

    with op.batch_alter_table('retrieval_traces', schema=None) as batch_op:
        for name in _missing('retrieval_traces', 'review_question_id'):
            batch_op.add_column(sa.Column(name, sa.String(), nullable=True))

    with op.batch_alter_table('routed_questions', schema=None) as batch_op:
        for name in _missing('routed_questions', 'review'):
            batch_op.add_column(sa.Column(name, sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('routed_questions', schema=None) as batch_op:
        batch_op.drop_column('review')

    with op.batch_alter_table('retrieval_traces', schema=None) as batch_op:
        batch_op.drop_column('review_question_id')

    with op.batch_alter_table('asked_questions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_asked_questions_trace_id'))

    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outcomes_trace_id'))
        batch_op.drop_index(batch_op.f('ix_outcomes_outcome'))
        batch_op.drop_index(batch_op.f('ix_outcomes_at'))

    op.drop_table('outcomes')
