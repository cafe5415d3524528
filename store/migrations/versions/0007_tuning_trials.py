"""Tuning trials as child rows of a job; the tuning budget of a job and of an auto-escalating request (issue 13)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'tuningtrial',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(), nullable=False),
        sa.Column('params_json', sa.JSON(), nullable=False),
        sa.Column('metrics_json', sa.JSON(), nullable=False),
        sa.Column('stages_json', sa.JSON(), nullable=False),
        sa.Column('passed', sa.Boolean(), nullable=False),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('objective', sa.Float(), nullable=True),
        sa.Column('steps', sa.Integer(), nullable=True),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.Column('reason', sa.String(), nullable=True),
        sa.Column('winner', sa.Boolean(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['job.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_tuningtrial_job_id', 'tuningtrial', ['job_id'], unique=False)
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tune_json', sa.JSON(), nullable=True))
    with op.batch_alter_table('request', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tune_json', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('request', schema=None) as batch_op:
        batch_op.drop_column('tune_json')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('tune_json')
    op.drop_index('ix_tuningtrial_job_id', table_name='tuningtrial')
    op.drop_table('tuningtrial')
