"""outbound_call_jobs with its status index.

A ledger made before the migrations moved to Alembic already has the table (and a
`schema_version` table saying so): it is adopted as it is.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("outbound_call_jobs"):
        return
    op.create_table(
        "outbound_call_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dial_id", sa.String(255), nullable=False, unique=True),
        sa.Column("lead_id", sa.String(255), nullable=False),
        sa.Column("business_id", sa.String(255), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("dial_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("call_sid", sa.String(64), unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("twilio_status", sa.String(16)),
        sa.Column("sequence", sa.Integer),
        sa.Column("error_code", sa.Integer),
        sa.Column("error_message", sa.Text),
        sa.Column("create_requests", sa.Integer, nullable=False, default=0),
        sa.Column("create_sent_at", sa.DateTime(timezone=True)),
        sa.Column("reported_status", sa.String(16)),
        sa.Column("reported_sequence", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heard_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_outbound_call_jobs_status_business",
        "outbound_call_jobs",
        ["status", "business_id"],
    )


def downgrade() -> None:
    op.drop_table("outbound_call_jobs")
