"""evidence: where each output leaks (character spans)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 23:00:00

One nullable JSON column, `{"before": [[start, end], ...] | null, "after": [...] | null}`: the parts of
output_before / output_after that matched a leak term (engine.compute.verify.metrics.leak_spans). Rows written before
this revision keep NULL and read as "spans unknown" (the console then marks the whole leaked output, as
before).
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('evidence', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spans_json', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('evidence', schema=None) as batch_op:
        batch_op.drop_column('spans_json')
