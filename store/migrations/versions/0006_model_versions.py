"""Model versions: lineage of accepted erasures, regression data (issue 14)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:30:00

A model's line of versions (`modelversion`: v0 the base as registered, each accept one more, materialised as
an HF directory), the encrypted forget prompts and key spans a landed request keeps for the regression checks
of later versions (`regressiondata`), and on each request the version its jobs start from and the one it
landed in. New columns are nullable: requests filed before this revision start from the base (v0).
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'modelversion',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('model_name', sa.String(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('parent', sa.Integer(), nullable=True),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('request_ids_json', sa.JSON(), nullable=False),
        sa.Column('path', sa.String(), nullable=False),
        sa.Column('sha256', sa.String(), nullable=False),
        sa.Column('status', sa.String(), nullable=False),
        sa.Column('verdict', sa.String(), nullable=True),
        sa.Column('manifest_json', sa.JSON(), nullable=False),
        sa.Column('control_json', sa.JSON(), nullable=False),
        sa.Column('regression_json', sa.JSON(), nullable=False),
        sa.Column('timings_json', sa.JSON(), nullable=False),
        sa.Column('withdrawn_reason', sa.String(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('modelversion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_modelversion_model_name'), ['model_name'], unique=False)
    op.create_table(
        'regressiondata',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('request_id', sa.Integer(), nullable=False),
        sa.Column('model_name', sa.String(), nullable=False),
        sa.Column('token', sa.String(), nullable=False),
        sa.Column('prompts', sa.Integer(), nullable=False),
        sa.Column('spans', sa.Integer(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('regressiondata', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_regressiondata_request_id'), ['request_id'], unique=True)
        batch_op.create_index(batch_op.f('ix_regressiondata_model_name'), ['model_name'], unique=False)
    with op.batch_alter_table('request', schema=None) as batch_op:
        batch_op.add_column(sa.Column('base_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('landed_version', sa.Integer(), nullable=True))
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_json', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('batch_json')
    with op.batch_alter_table('request', schema=None) as batch_op:
        batch_op.drop_column('landed_version')
        batch_op.drop_column('base_version')
    with op.batch_alter_table('regressiondata', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_regressiondata_model_name'))
        batch_op.drop_index(batch_op.f('ix_regressiondata_request_id'))
    op.drop_table('regressiondata')
    with op.batch_alter_table('modelversion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_modelversion_model_name'))
    op.drop_table('modelversion')
