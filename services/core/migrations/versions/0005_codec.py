"""ladder codec per upload and per video (h264 | hevc)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("codec", sa.String(length=8), nullable=True))
    # Every video made before this revision has an H.264 ladder.
    with op.batch_alter_table("videos", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("codec", sa.String(length=8), nullable=False, server_default="h264")
        )


def downgrade() -> None:
    with op.batch_alter_table("videos", schema=None) as batch_op:
        batch_op.drop_column("codec")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_column("codec")
