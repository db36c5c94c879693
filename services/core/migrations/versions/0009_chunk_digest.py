"""chunk digest: upload_chunks.sha256 becomes `digest`, an `algorithm:hex` (upload/digests.py)

New chunk rows hold an xxh3-128 of their bytes; the rows already there keep their sha256 as
`sha256:hex`, so a resend of such a chunk is still compared with it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("upload_chunks") as batch:
        batch.alter_column(
            "sha256", new_column_name="digest", existing_type=sa.String(64), type_=sa.String(80)
        )
    op.execute("UPDATE upload_chunks SET digest = 'sha256:' || digest")


def downgrade() -> None:
    # A row hashed with anything but sha256 has no sha256 to go back to: it is dropped, so its
    # chunk counts as missing and its client sends it again (the bytes are simply rewritten).
    op.execute("DELETE FROM upload_chunks WHERE digest NOT LIKE 'sha256:%'")
    op.execute("UPDATE upload_chunks SET digest = substr(digest, 8)")
    with op.batch_alter_table("upload_chunks") as batch:
        batch.alter_column(
            "digest", new_column_name="sha256", existing_type=sa.String(80), type_=sa.String(64)
        )
