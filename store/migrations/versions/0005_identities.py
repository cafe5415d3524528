"""Identities, roles, named API tokens, approvals and request deadlines (issue 15)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 08:30:00

request: who filed it (`requested_by`), the legal clock (`received_at`, `legal_basis`, `due_at`, the
extension granted and its reason) and who accepted its result (`accepted_by`, `accepted_at`,
`accept_comment`); job: who queued it (`requested_by`); apitoken: named, hashed, revocable bearer tokens
with their roles. Rows from before read as filed by nobody named, received when created, due 30 days later.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

TEXT = sqlmodel.sql.sqltypes.AutoString
WHEN = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table('request', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_by', TEXT(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('received_at', WHEN(), nullable=True))
        batch_op.add_column(sa.Column('legal_basis', TEXT(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('due_at', WHEN(), nullable=True))
        batch_op.add_column(sa.Column('extension_days', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('extension_reason', TEXT(), nullable=True))
        batch_op.add_column(sa.Column('accepted_by', TEXT(), nullable=True))
        batch_op.add_column(sa.Column('accepted_at', WHEN(), nullable=True))
        batch_op.add_column(sa.Column('accept_comment', TEXT(), nullable=True))
        batch_op.create_index(batch_op.f('ix_request_due_at'), ['due_at'], unique=False)
    # Requests filed before: received when filed, due 30 days later (SQLite's datetime() text parses back).
    op.execute("UPDATE request SET received_at = created_at, due_at = datetime(created_at, '+30 days') "
               "WHERE due_at IS NULL")
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_by', TEXT(), nullable=False, server_default=''))
    op.create_table(
        'apitoken',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', TEXT(), nullable=False),
        sa.Column('roles_json', sa.JSON(none_as_null=True), nullable=False),
        sa.Column('sha256', TEXT(), nullable=False),
        sa.Column('created_at', WHEN(), nullable=False),
        sa.Column('created_by', TEXT(), nullable=False),
        sa.Column('revoked_at', WHEN(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('apitoken', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apitoken_name'), ['name'], unique=True)
        batch_op.create_index(batch_op.f('ix_apitoken_sha256'), ['sha256'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('apitoken', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apitoken_sha256'))
        batch_op.drop_index(batch_op.f('ix_apitoken_name'))
    op.drop_table('apitoken')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('requested_by')
    with op.batch_alter_table('request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_request_due_at'))
        for column in ('accept_comment', 'accepted_at', 'accepted_by', 'extension_reason', 'extension_days',
                       'due_at', 'legal_basis', 'received_at', 'requested_by'):
            batch_op.drop_column(column)
