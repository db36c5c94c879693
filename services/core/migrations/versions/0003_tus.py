"""tus uploads: offset, metadata and concatenation of an upload

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 09:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tus_offset", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("tus_metadata", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("tus_concat", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_column("tus_concat")
        batch_op.drop_column("tus_metadata")
        batch_op.drop_column("tus_offset")
