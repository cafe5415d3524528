"""structured values as JSON columns; job.checkpoint_dir dropped

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:00:00

The ten columns that held JSON as text are declared JSON (SQLite keeps JSON as text, so every existing value
reads as before: nothing is rewritten, and a NULL stays NULL). The columns keep their names. The audit chain's
`detail_json` stays text: each row's hash covers its exact characters. `job.checkpoint_dir` was never written
(a job's checkpoints live in its work folder, store.paths.Paths.job_work_dir) and is dropped.
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# table -> its JSON columns (nullable ones marked True)
JSON_COLUMNS = {
    'modelentry': {'options_json': False},
    'request': {'spec_json': False},
    'requestdata': {'rows_json': True},
    'job': {'hyper_json': False, 'progress_json': False, 'result_json': False},
    'stageresult': {'policy_json': False},
    'evidence': {'spans_json': True},
    'artifact': {'manifest_json': False},
    'baselinecache': {'payload_json': False},
}


def upgrade() -> None:
    for table, columns in JSON_COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, nullable in columns.items():
                batch_op.alter_column(name, existing_type=sa.String(), type_=sa.JSON(), existing_nullable=nullable)
            if table == 'job':
                batch_op.drop_column('checkpoint_dir')


def downgrade() -> None:
    for table, columns in JSON_COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            if table == 'job':
                batch_op.add_column(sa.Column('checkpoint_dir', sa.String(), nullable=True))
            for name, nullable in columns.items():
                batch_op.alter_column(name, existing_type=sa.JSON(), type_=sa.String(), existing_nullable=nullable)
