"""The record of the abandoned-upload sweep's runs: the upload service sweeps and writes a
`Sweep` row per run (`services.upload.sweep`); the admin status reports their totals."""

from datetime import datetime

from sqlalchemy import func, select

from services.core.db import session_scope
from services.core.models import Sweep, as_utc
from services.core.settings import Settings


def sweep_totals(settings: Settings) -> dict[str, object]:
    """What every sweep so far reclaimed, and when the last one ran."""
    with session_scope(settings) as session:
        runs, uploads, size, last = session.execute(
            select(
                func.count(Sweep.id),
                func.coalesce(func.sum(Sweep.uploads_removed), 0),
                func.coalesce(func.sum(Sweep.bytes_reclaimed), 0),
                func.max(Sweep.ran_at),
            )
        ).one()
    last_run = as_utc(last) if isinstance(last, datetime) else None
    return {
        "runs": runs,
        "uploads_removed": uploads,
        "bytes_reclaimed": size,
        "last_run_at": last_run,
    }
