"""Columns for Twilio as it really behaves: its queue time, the SIP response code of a
failed call, which dialer owns a create, a cancel asked of a call queued past its
`dial_by`, and the outbox of statuses not yet delivered to Kafka. The hand-rolled
`schema_version` table is dropped: Alembic's `alembic_version` replaces it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE = "outbound_call_jobs"
OUTBOX_INDEX = "ix_outbound_call_jobs_report_due_at"


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(sa.Column("queue_seconds", sa.Float))
        batch.add_column(sa.Column("sip_response_code", sa.Integer))
        batch.add_column(sa.Column("owner", sa.String(255)))
        batch.add_column(sa.Column("owned_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("report_due_at", sa.DateTime(timezone=True)))
    op.create_index(OUTBOX_INDEX, TABLE, ["report_due_at"])
    # Rows whose current status was never delivered are the outbox's first entries.
    op.execute(
        sa.text(
            f"UPDATE {TABLE} SET report_due_at = updated_at"
            " WHERE twilio_status IS NOT NULL AND (reported_status IS NULL"
            " OR reported_status <> twilio_status)"
        )
    )
    if sa.inspect(op.get_bind()).has_table("schema_version"):
        op.drop_table("schema_version")


def downgrade() -> None:
    op.drop_index(OUTBOX_INDEX, TABLE)
    with op.batch_alter_table(TABLE) as batch:
        for column in (
            "report_due_at",
            "cancel_requested_at",
            "owned_until",
            "owner",
            "sip_response_code",
            "queue_seconds",
        ):
            batch.drop_column(column)
