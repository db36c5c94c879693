"""captions: a video's subtitle tracks, uploaded or extracted from the source

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "captions",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("video_id", sa.String(length=32), nullable=False),
        sa.Column("language", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("source_format", sa.String(length=32), nullable=False),
        sa.Column("stream_index", sa.Integer(), nullable=True),
        sa.Column("cues", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["video_id"], ["videos.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_captions_video_id"), "captions", ["video_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_captions_video_id"), table_name="captions")
    op.drop_table("captions")
