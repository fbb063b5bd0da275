"""source observations: what the pipeline last saw of each source file

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 19:06:52.716587

Numbered 0010 as assigned, after main's newest (0009); the lead re-chains it when merging.
Existing homes start with no observations: the next sync of each source (an ingest, the
hourly reconciliation) records them, and until then every file counts as unobserved.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | Sequence[str] | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('source_observations',
    sa.Column('path', sa.String(), nullable=False),
    sa.Column('state_kind', sa.String(), nullable=False),
    sa.Column('source_name', sa.String(), nullable=False),
    sa.Column('mtime_ns', sa.BigInteger(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('path'),
    if_not_exists=True
    )
    with op.batch_alter_table('source_observations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_source_observations_source_name'), ['source_name'], unique=False, if_not_exists=True)



def downgrade() -> None:
    with op.batch_alter_table('source_observations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_source_observations_source_name'))

    op.drop_table('source_observations')
