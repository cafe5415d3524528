"""Where a job ran: executor, node and slot (issue 16)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 08:30:00

A job records which executor ran it (`local`: a worker subprocess on the engine host; `ray`: an actor on a
Ray cluster) and the node it ran on (the host name locally; the Ray node id and address on a cluster), so
an operator and an auditor can tell where the request's texts went. Nullable: jobs from before this
revision (and queued ones) read as "not recorded".
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('executor', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('node', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('node')
        batch_op.drop_column('executor')
