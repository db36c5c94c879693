"""direct upload URLs (one upload per token, with its limits)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 22:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "direct_uploads",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("upload_id", sa.String(length=32), nullable=True),
        sa.Column("max_size", sa.BigInteger(), nullable=False),
        sa.Column("cors_origin", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("codec", sa.String(length=8), nullable=True),
        sa.Column("private", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_sha256"),
        sa.UniqueConstraint("upload_id"),
    )


def downgrade() -> None:
    op.drop_table("direct_uploads")
