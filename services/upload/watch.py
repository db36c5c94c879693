"""The watch folder: a video file dropped into STORAGE_DIR/incoming/ becomes a video, exactly
as if it had been uploaded in chunks.

How a file travels:

1. **Scan.** Every WATCH_INTERVAL_SECONDS the folder is listed (not its sub-folders). Names
   starting with a dot and temporary names (`*.part`, `*.tmp`, `*.crdownload`, `*~`, ...) are
   left alone, and so is an empty file. A file is taken only once its size, mtime and inode are
   the same as at the previous scan, so a file still being copied in is not taken half-written.
   Writers should still copy to a dotfile (`.holiday.mp4`) and rename it when complete: the
   rename is atomic, while a copy that stalls for longer than one period would be taken early.
2. **Claim.** The file is renamed into `incoming/.claimed/{token}/` by a process holding an
   flock on that claim folder. A rename on one filesystem, never a copy: of several upload
   service processes exactly one rename succeeds, and the others find the file gone.
3. **Checks.** A regular file (a symbolic link is never followed: it is refused), an allowed
   extension, at most MAX_UPLOAD_BYTES, and ffprobe must see a video in it. A file failing a
   check goes to `incoming/failed/` with `{name}.error.txt` beside it saying why. It is never
   retried by itself: fix it and move it back into incoming/.
4. **Registration.** A one-chunk upload is declared (`uploads.init_upload`; the file's name is
   the video's label), the file is hard-linked into `originals/{id}/source`, its chunk recorded,
   and `uploads.complete_upload` verifies, probes and queues transcoding: from there on it is
   an upload like any other.
5. The claim folder is removed.

Crash safety: the claim folder keeps the file (the hard link) and, once the upload is declared,
`.upload.json` with its id, until the video is registered. A claim folder whose flock nobody
holds was left by a dead process: every scan resumes it from where it stopped. A claim that
fails for another reason (database down, disk full) is tried again with a doubling delay; after
MAX_ATTEMPTS it goes to failed/ with the last error.
"""

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Counter

from services.core import ids
from services.core.db import session_scope
from services.core.errors import InvalidInput, NotAVideo
from services.core.models import Upload, UploadChunk, Video
from services.core.settings import Settings
from services.core.storage import Storage, write_atomic
from services.core.tasks import sleep_unless
from services.media.bounds import check_source
from services.media.probe import ProbeError, probe
from services.upload import digests
from services.upload.hashing import HASHERS
from services.upload.uploads import clean_filename, complete_upload, init_upload

log = logging.getLogger(__name__)

CLAIMS = ".claimed"
FAILED = "failed"
LOCK = ".lock"
MARKER = ".upload.json"
ATTEMPTS = ".attempts"
# Endings that browsers, rsync, office programs and editors give files they are still writing.
TEMP_SUFFIXES = (
    *(".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart"),
    *(".swp", "~"),
)
# Tries of a claim that fails for a reason other than its content, before it goes to failed/.
MAX_ATTEMPTS = 5
NAME_MAX = 255  # bytes in one file name on Linux and macOS filesystems
READ_SIZE = 8 * 1024 * 1024
# What os.link raises where the filesystem has no hard links (FAT, exFAT, some SMB mounts).
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}

WATCH_FILES = Counter(
    "watch_folder_files_total", "Files taken from the watch folder, by outcome", ["outcome"]
)

Stop = Callable[[], bool]


class Refused(Exception):
    """The file itself is unfit (not a video, a link, too large...): it goes to failed/."""


class Interrupted(Exception):
    """The service is stopping: the claim is left for the next start to resume."""


@dataclass
class Claim:
    """A claim folder whose flock this process holds (released by `release`)."""

    folder: Path
    fd: int

    @property
    def token(self) -> str:
        return self.folder.name

    def payload(self) -> Path | None:
        """The claimed file (the only name not starting with a dot), if it is still here."""
        names = [p for p in self.folder.iterdir() if not p.name.startswith(".")]
        return names[0] if names else None

    def marker(self) -> dict[str, object] | None:
        """What was declared for this file (`upload_id`, `sha256`, `size`), if anything."""
        try:
            data: dict[str, object] = json.loads((self.folder / MARKER).read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data

    def attempts(self) -> int:
        try:
            return int((self.folder / ATTEMPTS).read_text("ascii"))
        except (FileNotFoundError, ValueError):
            return 0

    def release(self) -> None:
        os.close(self.fd)

    def remove(self) -> None:
        """Delete the claim folder (its file is gone: registered or moved to failed/)."""
        for name in (MARKER, ATTEMPTS, LOCK):
            (self.folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: another process is claiming into it
            self.folder.rmdir()


def claims_dir(storage: Storage) -> Path:
    return storage.incoming_dir() / CLAIMS


def failed_dir(storage: Storage) -> Path:
    return storage.incoming_dir() / FAILED


def lock_claim(folder: Path) -> Claim | None:
    """Take the flock of a claim folder; None when another process (or claim) holds it."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except (FileNotFoundError, NotADirectoryError):
        return None  # removed meanwhile by whoever finished it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The lock file may have been unlinked between our open and our flock by a process
        # removing an empty claim: a lock on an unlinked file protects nothing.
        if os.fstat(fd).st_ino != os.stat(folder / LOCK, follow_symlinks=False).st_ino:
            raise BlockingIOError
    except OSError:
        os.close(fd)
        return None
    return Claim(folder, fd)


def claim_file(storage: Storage, name: str) -> Claim | None:
    """Move `incoming/{name}` into a new claim folder; None when another process took it."""
    folder = claims_dir(storage) / secrets.token_hex(8)
    folder.mkdir(parents=True)
    claim = lock_claim(folder)
    if claim is None:
        return None  # a resuming process saw the folder empty and is removing it
    try:
        # Atomic: the first rename wins; for every other process the source is gone.
        os.rename(storage.incoming_dir() / name, folder / name)
    except FileNotFoundError:
        claim.remove()
        claim.release()
        return None
    return claim


def _signature(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev)


def _left_alone(name: str) -> bool:
    """Dotfiles (files being written, our own .claimed/) and temporary names."""
    return name.startswith((".", "~$")) or name.lower().endswith(TEMP_SUFFIXES)


def label_of(name: str) -> str:
    """A file name as the video's label: valid text, no path or control characters."""
    # A name that is not UTF-8 comes from os.listdir with surrogate escapes, which no
    # database accepts: such bytes become U+FFFD.
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return clean_filename(text)


def display_name(name: str) -> str:
    """A name fit for a log line or an error file, even one that is no valid label."""
    try:
        return label_of(name)
    except InvalidInput:
        return repr(name)


def fit_name(name: str, suffix: str = "") -> str:
    """`name` + `suffix`, with `name` shortened so the whole fits in one file name."""
    room = NAME_MAX - len(suffix.encode("utf-8", "surrogateescape"))
    raw = name.encode("utf-8", "surrogateescape")[:room]
    return raw.decode("utf-8", "surrogateescape") + suffix


class Watcher:
    """One process's view of the watch folder; `scan_once` does one round of work."""

    def __init__(self, settings: Settings, stop: Stop = lambda: False) -> None:
        self.settings = settings
        self.storage = Storage(settings.storage_dir)
        self.stop = stop
        self.seen: dict[str, tuple[int, int, int, int]] = {}
        self.reported: set[str] = set()

    # -- scanning ---------------------------------------------------------------------------

    def scan_once(self) -> None:
        """Resume abandoned claims, then claim and register every file that is ready."""
        if not self._folder_usable():
            return
        self.resume_claims()
        for name in self.ready_names():
            if self.stop():
                return
            if not self._unchanged(name):
                continue
            claim = claim_file(self.storage, name)
            if claim is not None:
                self.process(claim)

    def _folder_usable(self) -> bool:
        incoming = self.storage.incoming_dir()
        for folder in (incoming, claims_dir(self.storage), failed_dir(self.storage)):
            if folder.is_symlink():
                # Following it would read or write files outside the storage folder.
                why = f"{folder.relative_to(self.storage.root)} is a symbolic link: not watched"
                self._report_once(folder.name, why)
                return False
        incoming.mkdir(parents=True, exist_ok=True)
        return True

    def ready_names(self) -> list[str]:
        """Names unchanged since the previous scan (which remembers what it saw now)."""
        current: dict[str, tuple[int, int, int, int]] = {}
        listed = {self.storage.incoming_dir().name}
        with os.scandir(self.storage.incoming_dir()) as entries:
            for entry in entries:
                listed.add(entry.name)
                info = self._candidate(entry)
                if info is not None:
                    current[entry.name] = _signature(info)
        ready = [name for name, sig in current.items() if self.seen.get(name) == sig]
        self.seen = current
        self.reported &= listed  # a name that comes back is reported again
        return sorted(ready)

    def _unchanged(self, name: str) -> bool:
        """Still as the scan saw it (an earlier file may have taken a while to register)."""
        try:
            info = os.lstat(self.storage.incoming_dir() / name)
        except FileNotFoundError:
            return False
        return self.seen.get(name) == _signature(info)

    def _candidate(self, entry: os.DirEntry[str]) -> os.stat_result | None:
        """The entry's own lstat when it may be picked up (links too: they get refused)."""
        if _left_alone(entry.name):
            return None
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(info.st_mode):
            if entry.name != FAILED:
                self._report_once(entry.name, "sub-folders of incoming/ are not watched")
            return None
        if stat.S_ISREG(info.st_mode) and info.st_size == 0:
            return None  # most likely just created by a copy that has not written yet
        return info

    def _report_once(self, name: str, why: str) -> None:
        if name not in self.reported:
            self.reported.add(name)
            log.warning("watch folder: %r left alone: %s", display_name(name), why)

    def resume_claims(self) -> None:
        """Finish claims whose process died (nobody holds their flock) and that are due."""
        folder = claims_dir(self.storage)
        if not folder.is_dir():
            return
        for sub in sorted(folder.iterdir()):
            if self.stop():
                return
            if sub.is_symlink() or not sub.is_dir() or not self._due(sub):
                continue
            claim = lock_claim(sub)
            if claim is not None:
                log.info("watch folder: resuming claim %s", claim.token)
                self.process(claim)

    def _due(self, folder: Path) -> bool:
        """False while a claim that failed waits out its delay (doubling each attempt)."""
        try:
            tried = folder / ATTEMPTS
            count = int(tried.read_text("ascii"))
            since = time.time() - tried.stat().st_mtime
        except (FileNotFoundError, ValueError):
            return True
        return since >= self.settings.watch_interval_seconds * 2 ** (count - 1)

    # -- one claim --------------------------------------------------------------------------

    def process(self, claim: Claim) -> None:
        """Register the claimed file, or refuse it, or leave it to be tried again; unlock."""
        try:
            video = self._register(claim)
        except Refused as exc:
            self._fail(claim, str(exc))
        except Interrupted:
            log.info("watch folder: stopping; claim %s is resumed at the next start", claim.token)
        except Exception as exc:
            self._retry_later(claim, exc)
        else:
            if video is not None:
                self._picked(claim, video)
            claim.remove()
        finally:
            claim.release()

    def _register(self, claim: Claim) -> Video | None:
        """Declare, adopt and complete the claimed file (resuming what a crash left)."""
        payload, marker = claim.payload(), claim.marker()
        upload_id = self._live_upload(marker)
        if upload_id is None:
            if payload is None:
                return None  # nothing was claimed into it, or its file is already gone
            upload_id, marker = self._declare(claim, payload)
        elif payload is None and self._registered(upload_id):
            return None  # a crash came after the registration: only the clean-up was left
        assert marker is not None
        size, sha256 = int(str(marker["size"])), str(marker["sha256"])
        if payload is not None:
            self._adopt(upload_id, payload)
        self._record_chunk(upload_id, size, sha256)
        return self._complete(upload_id)

    def _live_upload(self, marker: dict[str, object] | None) -> str | None:
        """The upload a previous attempt declared, if it still exists (not swept)."""
        if marker is None:
            return None
        upload_id = ids.video_id(str(marker.get("upload_id", "")))
        with session_scope(self.settings) as session:
            return upload_id if session.get(Upload, upload_id) is not None else None

    def _registered(self, upload_id: str) -> bool:
        with session_scope(self.settings) as session:
            return session.get(Video, upload_id) is not None

    def _declare(self, claim: Claim, payload: Path) -> tuple[str, dict[str, object]]:
        """Check the file, hash it and declare its upload; remember that in the claim."""
        label, size = self._check(payload)
        digest = self._hash(payload, size)
        sha256 = digest.hexdigest()
        try:
            with session_scope(self.settings) as session:
                upload = init_upload(
                    session,
                    self.storage,
                    self.settings,
                    filename=label,
                    total_chunks=1,
                    # total_size is left out: init would then want that much disk free on
                    # top, but the file is on the storage disk already and moves nowhere.
                    sha256=sha256,
                )
        except InvalidInput as exc:
            raise Refused(exc.detail) from exc
        marker: dict[str, object] = {"upload_id": upload.id, "size": size, "sha256": sha256}
        write_atomic(claim.folder / MARKER, json.dumps(marker))
        # `complete` takes the whole file's digest from here instead of reading it again.
        HASHERS.get(upload.id, self.storage.source_path(upload.id)).commit(0, size, digest)
        return upload.id, marker

    def _check(self, payload: Path) -> tuple[str, int]:
        """The file's label and size, or Refused saying why it cannot become a video."""
        info = payload.lstat()
        if stat.S_ISLNK(info.st_mode):
            raise Refused(
                "it is a symbolic link, and links are never followed (they may point outside "
                "the storage folder): move or copy the file itself into incoming/"
            )
        if not stat.S_ISREG(info.st_mode):
            raise Refused("it is not a regular file (a folder, pipe or device)")
        try:
            label = label_of(payload.name)
        except InvalidInput as exc:
            raise Refused(exc.detail) from exc
        self._check_extension(label)
        if info.st_size > self.settings.max_upload_bytes:
            raise Refused(
                f"it has {info.st_size} bytes; the limit is {self.settings.max_upload_bytes} "
                "(MAX_UPLOAD_BYTES)"
            )
        try:
            source = probe(payload, ffprobe=self.settings.ffprobe_bin)
            check_source(source, self.settings, size=info.st_size)
        except ProbeError as exc:
            raise Refused(f"it is not a playable video: {exc.detail}") from exc
        return label, info.st_size

    def _check_extension(self, label: str) -> None:
        allowed = {
            e.strip().lower() for e in self.settings.allowed_extensions.split(",") if e.strip()
        }
        _, dot, ending = label.rpartition(".")
        if not dot or ending.lower() not in allowed:
            raise Refused(
                f"its name does not end in a video or audio file extension; accepted: "
                f"{', '.join(sorted(allowed))}"
            )

    def _hash(self, payload: Path, size: int) -> "hashlib._Hash":
        """sha256 of the file's `size` bytes, giving up when the service stops."""
        digest = hashlib.sha256()
        fd = os.open(payload, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            position = 0
            while position < size:
                if self.stop():
                    raise Interrupted
                piece = os.pread(fd, min(READ_SIZE, size - position), position)
                if not piece:
                    raise Refused(f"it shrank to {position} bytes while it was read")
                digest.update(piece)
                position += len(piece)
        finally:
            os.close(fd)
        return digest

    def _adopt(self, upload_id: str, payload: Path) -> None:
        """Make the claimed file the upload's source: a hard link, so the claim keeps it."""
        source = self.storage.source_path(upload_id)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(payload), os.stat(source)):
                return
        staged = source.with_name(".source.watch")
        staged.unlink(missing_ok=True)
        try:
            os.link(payload, staged, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            # A filesystem without hard links: the claim no longer keeps the file, but
            # originals/ does, and a resumed claim carries on from the declared upload.
            os.replace(payload, source)
            return
        os.replace(staged, source)  # replaces the empty file init_upload made

    def _record_chunk(self, upload_id: str, size: int, sha256: str) -> None:
        """Count the whole file as chunk 0 (its bytes are in place: see UploadChunk)."""
        with session_scope(self.settings) as session:
            if session.get(UploadChunk, (upload_id, 0)) is None:
                digest = digests.stored(digests.SHA256, sha256)
                session.add(UploadChunk(upload_id=upload_id, index=0, size=size, digest=digest))

    def _complete(self, upload_id: str) -> Video:
        try:
            return complete_upload(self.settings, self.storage, upload_id=upload_id)
        except NotAVideo:
            # Probed fine at the claim, not now: registered as a failed video with the
            # reason, like any upload; the original stays in originals/ for the operator.
            with session_scope(self.settings) as session:
                video = session.get(Video, upload_id)
            if video is None:
                raise
            return video

    # -- outcomes ---------------------------------------------------------------------------

    def _picked(self, claim: Claim, video: Video) -> None:
        WATCH_FILES.labels("picked").inc()
        log.info(
            "watch folder: %r picked up as video %s (%s)",
            video.filename,
            video.id,
            video.status,
            extra={"video_id": video.id},
        )
        payload = claim.payload()
        if payload is not None:
            payload.unlink()  # the claim's link; the bytes stay in originals/

    def _fail(self, claim: Claim, reason: str) -> None:
        """Move the file to failed/ with `{name}.error.txt` beside it, then drop the claim."""
        WATCH_FILES.labels("failed").inc()
        payload = claim.payload()
        if payload is None:
            log.error("watch folder: claim %s failed and has no file left: %s", claim.token, reason)
            claim.remove()
            return
        target = self._failed_path(claim, payload.name)
        os.rename(payload, target)
        name = display_name(payload.name)
        when = datetime.now(UTC).isoformat(timespec="seconds")
        target.with_name(fit_name(target.name, ".error.txt")).write_text(
            f"'{name}' was not picked up from the watch folder ({when}).\n"
            f"Reason: {reason}\n"
            "To try again, fix the file and move it back into incoming/ (write it under a name "
            "starting with a dot and rename it once it is complete).\n",
            encoding="utf-8",
            errors="replace",
        )
        log.warning("watch folder: %r refused, moved to failed/: %s", name, reason)
        claim.remove()

    def _failed_path(self, claim: Claim, name: str) -> Path:
        """failed/{name}, or failed/{token}-{name} when a file of that name failed before."""
        folder = failed_dir(self.storage)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        if target.exists() or target.is_symlink():
            target = folder / fit_name(f"{claim.token}-{name}")
        return target

    def _retry_later(self, claim: Claim, exc: Exception) -> None:
        """Count a failed attempt; past MAX_ATTEMPTS the file goes to failed/ with the error."""
        count = claim.attempts() + 1
        log.warning(
            "watch folder: claim %s failed (attempt %d of %d)",
            claim.token,
            count,
            MAX_ATTEMPTS,
            exc_info=exc,
        )
        if count >= MAX_ATTEMPTS:
            self._fail(claim, f"gave up after {count} attempts; the last error: {_describe(exc)}")
            return
        write_atomic(claim.folder / ATTEMPTS, str(count))


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.EXDEV:
        return f"{exc} (incoming/ must be on the same filesystem as originals/)"
    detail = getattr(exc, "detail", None)
    return str(detail or exc) or type(exc).__name__


async def watch_forever(settings: Settings, shutdown: asyncio.Event) -> None:
    """Scan the watch folder every WATCH_INTERVAL_SECONDS until `shutdown` is set."""
    if not settings.watch_folder_enabled:
        return
    watcher = Watcher(settings, stop=shutdown.is_set)
    while not shutdown.is_set():
        try:
            await asyncio.to_thread(watcher.scan_once)
        except Exception:
            # One failed scan (a locked database, a vanished file) must not end the watching.
            log.exception("watch folder scan failed")
        await sleep_unless(shutdown, settings.watch_interval_seconds)
