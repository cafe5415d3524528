"""metric: 95% interval, sample size and a note; stage result: a note

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:10:00

A judged figure carries its uncertainty (`ci_low`, `ci_high`: a 95% interval; `n`: the sample it rests on)
and a `note` saying why it was not judged (not measured, no signal on the base, waived by the policy) or which
side of a two-sided rule it failed. A stage result's `note` says why the stage is incomplete. All nullable:
rows from before this revision read as "no interval recorded".
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('metric', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ci_low', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('ci_high', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('n', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('note', sa.String(), nullable=True))
    with op.batch_alter_table('stageresult', schema=None) as batch_op:
        batch_op.add_column(sa.Column('note', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('stageresult', schema=None) as batch_op:
        batch_op.drop_column('note')
    with op.batch_alter_table('metric', schema=None) as batch_op:
        batch_op.drop_column('note')
        batch_op.drop_column('n')
        batch_op.drop_column('ci_high')
        batch_op.drop_column('ci_low')
