"""Index for the reconciler's scan of silent live calls.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEX = "ix_outbound_call_jobs_status_last_heard"


def upgrade() -> None:
    indexes = sa.inspect(op.get_bind()).get_indexes("outbound_call_jobs")
    if any(index["name"] == INDEX for index in indexes):
        return  # a ledger migrated by the hand-rolled steps has it
    op.create_index(INDEX, "outbound_call_jobs", ["status", "last_heard_at"])


def downgrade() -> None:
    op.drop_index(INDEX, "outbound_call_jobs")
