"""The abandoned-upload sweep: uploads that received no chunk for UPLOAD_EXPIRY_SECONDS are
removed with their files (and direct upload URLs expired that long ago), and every run is
recorded for the admin status (`services.core.sweeps`)."""

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, select

from services.core.db import session_scope
from services.core.models import DirectUpload, Sweep, Upload, UploadChunk, utcnow
from services.core.settings import Settings
from services.core.storage import Storage
from services.core.storage.interface import StorageUnavailable
from services.core.tasks import sleep_unless
from services.upload import remote, tus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    uploads_removed: int
    bytes_reclaimed: int


def _bytes_under(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def sweep_abandoned(settings: Settings) -> SweepResult:
    """Remove every unfinished upload idle for longer than the expiry; record the run."""
    storage = Storage(settings.storage_dir)
    cutoff = utcnow() - timedelta(seconds=settings.upload_expiry_seconds)
    with session_scope(settings) as session:
        stale = session.scalars(
            select(Upload.id).where(Upload.completed.is_(False), Upload.updated_at < cutoff)
        ).all()
    # A tus upload (partial ones too) idles like a chunked one, unless a PATCH is writing it.
    stale = [upload_id for upload_id in stale if not tus.busy(storage, upload_id)]
    reclaimed = 0
    removed = 0
    for upload_id in stale:
        try:
            remote.discard(settings, upload_id)
        except StorageUnavailable:
            # Its multipart object stays in the bucket: the next run tries again.
            log.warning("sweep: the bucket is unreachable; upload %s is kept for now", upload_id)
            continue
        removed += 1
        folder = storage.original_dir(upload_id)
        reclaimed += _bytes_under(folder) if folder.is_dir() else 0
        with session_scope(settings) as session:
            session.execute(delete(UploadChunk).where(UploadChunk.upload_id == upload_id))
            session.execute(delete(Upload).where(Upload.id == upload_id))
        storage.delete_video(upload_id)
    with session_scope(settings) as session:
        # Direct upload URLs expired for as long as an idle upload is kept: no one can use
        # them, and their creator has had that long to ask what became of them.
        session.execute(delete(DirectUpload).where(DirectUpload.expires_at < cutoff))
        session.add(Sweep(uploads_removed=removed, bytes_reclaimed=reclaimed))
    if removed:
        log.info("sweep removed %d abandoned uploads, %d bytes", removed, reclaimed)
    return SweepResult(removed, reclaimed)


async def sweep_forever(settings: Settings, shutdown: asyncio.Event) -> None:
    """Run the sweep every SWEEP_INTERVAL_SECONDS until `shutdown` is set."""
    while not shutdown.is_set():
        try:
            await asyncio.to_thread(sweep_abandoned, settings)
        except Exception:
            # One failed run (a locked database, a file in use) must not end the sweeping.
            log.exception("abandoned-upload sweep failed")
        await sleep_unless(shutdown, settings.sweep_interval_seconds)
