"""The local folder backend: each key is a file below one root folder (the embedded default, and
every machine of a deployment that shares a file system).

Multipart objects are written as one file per part in `{root}/.multipart/{upload_id}/`, named
`{number:05d}-{md5}` (the ETag is in the name: a part resent with other bytes never overwrites
the one a caller may still name), and joined into the object by `finish_multipart`.
"""

import errno
import hashlib
import io
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from services.core.errors import InsufficientStorage
from services.core.storage import make_durable, remove_tree, write_atomic
from services.core.storage.interface import ObjectInfo, ObjectMissing, Part, StorageUnavailable
from services.core.storage.keys import InvalidKey, check_key, check_prefix
from services.core.storage.parts import PartRejected, check_part_number, check_parts

# Pieces read_range yields and copies move: big enough for few system calls, small enough to
# keep memory flat.
PIECE_BYTES = 1024 * 1024
MULTIPART_DIR = ".multipart"
UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
PART_ETAG_RE = re.compile(r"[0-9a-f]{32}")
# write_atomic's temporary files (.{name}.{pid}.{thread}.tmp): never objects, never listed.
TEMP_NAME_RE = re.compile(r"\..+\.\d+\.\d+\.tmp")
# Errors that say the disk, not the caller, is at fault.
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FAILED_ERRNOS = (errno.EIO, errno.EROFS)


class LocalStore:
    """Objects as files below `root`; `public_base`, when given, is the URL `root` is served at
    (a CDN or web server in front of the folder)."""

    name = "local"

    def __init__(self, root: Path, public_base: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.public_base = public_base.rstrip("/") if public_base else None

    # --- whole objects --------------------------------------------------------------------
    def put_file(self, key: str, source: Path, *, content_type: str | None = None) -> ObjectInfo:
        """Move `source` into place (renamed on the same disk, else copied), durably."""
        dest = self._path(key)
        with _disk_errors(key):
            created = _make_folders(dest.parent)
            try:
                os.replace(source, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_into_place(Path(source), dest)
                Path(source).unlink()
            make_durable([dest], folders=[f.parent for f in created])
        return _info(key, dest)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Publish `data` atomically (write_atomic: temporary file, fsync, rename, fsync)."""
        dest = self._path(key)
        with _disk_errors(key):
            created = _make_folders(dest.parent)
            write_atomic(dest, data)
            if created:
                make_durable([], folders=[f.parent for f in created])
        return _info(key, dest)

    def get_bytes(self, key: str, *, limit: int) -> bytes:
        """The object's bytes; ValueError when it holds more than `limit`."""
        with _open(key, self._path(key)) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"object {key!r} is larger than {limit} bytes")
        return data

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) in pieces of PIECE_BYTES; ObjectMissing at once if missing."""
        check_range(start, end)
        path = self._path(key)
        if not path.is_file():
            raise ObjectMissing(f"no object {key!r}")
        return _pieces(key, path, start, end)

    def stat(self, key: str) -> ObjectInfo | None:
        """Size, mtime-based ETag and mtime of the file, or None."""
        try:
            return _info(key, self._path(key))
        except ObjectMissing:
            return None

    def list_prefix(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every file below the prefix's folder, in key order."""
        folder = self._prefix_path(prefix)
        found = sorted(_walk(folder, prefix), key=lambda info: info.key)
        return iter(found)

    def delete(self, key: str) -> None:
        """Unlink the file (a missing one, or a folder's name, is nothing to remove)."""
        with suppress(IsADirectoryError, NotADirectoryError):
            self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        """Remove the prefix's folder and everything below it; how many objects it held."""
        folder = self._prefix_path(prefix)
        count = sum(1 for _ in _walk(folder, prefix))
        remove_tree(folder)
        return count

    # --- readers that are not this process ------------------------------------------------
    def local_path(self, key: str) -> Path | None:
        """The object's file (whether or not it exists yet)."""
        return self._path(key)

    def reader_url(self, key: str, *, expires_seconds: int) -> str | None:
        """None: a folder has no URL of its own (readers use local_path)."""
        self._path(key)
        return None

    def public_url(self, key: str) -> str | None:
        """`public_base`/key, or None without a public base."""
        self._path(key)
        return f"{self.public_base}/{quote(key)}" if self.public_base else None

    # --- streaming writes: multipart objects ----------------------------------------------
    def start_multipart(self, key: str, *, content_type: str | None = None) -> str:
        """A new upload folder holding the key it is for; its random id."""
        self._path(key)
        upload_id = secrets.token_hex(16)
        folder = self.root / MULTIPART_DIR / upload_id
        with _disk_errors(key):
            created = _make_folders(folder)
            write_atomic(folder / "key", key)
            make_durable([], folders=[f.parent for f in created])
        return upload_id

    def put_part(self, key: str, upload_id: str, number: int, source: Path) -> Part:
        """Copy `source` into the upload folder (md5 taken on the way) as part `number`."""
        check_part_number(number)
        folder = self._upload_folder(key, upload_id)
        with _disk_errors(key):
            tmp = _temporary(folder / f"{number:05d}")
            try:
                digest, size = _copy_hashing(Path(source), tmp)
                final = folder / f"{number:05d}-{digest}"
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            # A part resent with other bytes sits beside the earlier one until the upload ends
            # (deleting that here could race with a concurrent resend): finish joins the one
            # whose ETag it is given.
            make_durable([], folders=[folder])
        return Part(number=number, etag=digest, size=size)

    def finish_multipart(self, key: str, upload_id: str, parts: list[Part]) -> ObjectInfo:
        """Join the parts (each checked: there, same size, same ETag) into the object."""
        ordered = check_parts(parts)
        folder = self._upload_folder(key, upload_id)
        files = [_stored_part(folder, part) for part in ordered]
        dest = self._path(key)
        with _disk_errors(key):
            created = _make_folders(dest.parent)
            tmp = _temporary(dest)
            try:
                _join(files, tmp)
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            make_durable([], folders=[dest.parent, *(f.parent for f in created)])
        remove_tree(folder)
        return _info(key, dest)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Remove the upload folder (an unknown id, or another key's, is left alone)."""
        self._path(key)
        try:
            folder = self._upload_folder(key, upload_id)
        except ObjectMissing:
            return
        remove_tree(folder)

    # --- health ---------------------------------------------------------------------------
    def check(self) -> str | None:
        """None when the root is a folder this process may write in."""
        if not self.root.is_dir():
            return f"storage folder {self.root} does not exist"
        if not os.access(self.root, os.W_OK | os.X_OK):
            return f"storage folder {self.root} is not writable by this process"
        return None

    # --- keys to paths --------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        """The file of `key`, once the key is valid, not reserved and stays inside the root."""
        check_key(key)
        if key.split("/", 1)[0] == MULTIPART_DIR or TEMP_NAME_RE.fullmatch(key.rsplit("/", 1)[-1]):
            raise InvalidKey(f"key {key[:80]!r} is a name the local store keeps for itself")
        return self._inside(key)

    def _prefix_path(self, prefix: str) -> Path:
        check_prefix(prefix)
        if prefix.split("/", 1)[0] == MULTIPART_DIR:
            raise InvalidKey(f"prefix {prefix[:80]!r} is a name the local store keeps for itself")
        return self._inside(prefix)

    def _inside(self, name: str) -> Path:
        path = self.root / name
        # A symbolic link below the root may point out of it: the target is what counts.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"{name[:80]!r} leads out of the storage folder")
        return path

    def _upload_folder(self, key: str, upload_id: str) -> Path:
        """The folder of an unfinished upload of `key`, else ObjectMissing."""
        if UPLOAD_ID_RE.fullmatch(upload_id):
            folder = self.root / MULTIPART_DIR / upload_id
            try:
                if (folder / "key").read_text() == key:
                    return folder
            except (FileNotFoundError, NotADirectoryError):
                pass
        raise ObjectMissing(f"no unfinished multipart upload {upload_id[:64]!r} of {key!r}")


def check_range(start: int, end: int | None) -> None:
    """Refuse a range that names no bytes the way the interface counts them."""
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad byte range [{start}, {end})")


@contextmanager
def _disk_errors(key: str) -> Iterator[None]:
    """Turn a full or failing disk into the interface's errors (the rest are bugs)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise InsufficientStorage(f"the storage disk is full: cannot write {key!r}") from exc
        if exc.errno in FAILED_ERRNOS:
            raise StorageUnavailable(f"the storage disk failed writing {key!r}") from exc
        raise


@contextmanager
def _open(key: str, path: Path) -> Iterator[io.FileIO]:
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise ObjectMissing(f"no object {key!r}") from exc
    with handle:
        yield handle


def _pieces(key: str, path: Path, start: int, end: int | None) -> Iterator[bytes]:
    with _open(key, path) as handle:
        handle.seek(start)
        remaining = None if end is None else end - start
        while remaining is None or remaining > 0:
            piece = handle.read(PIECE_BYTES if remaining is None else min(PIECE_BYTES, remaining))
            if not piece:
                return
            if remaining is not None:
                remaining -= len(piece)
            yield piece


def _info(key: str, path: Path) -> ObjectInfo:
    try:
        found = path.stat()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ObjectMissing(f"no object {key!r}") from exc
    if not stat.S_ISREG(found.st_mode):
        raise ObjectMissing(f"no object {key!r}")
    return _info_of(key, found)


def _info_of(key: str, found: os.stat_result) -> ObjectInfo:
    etag = f"{found.st_size:x}-{found.st_mtime_ns:x}"
    return ObjectInfo(key=key, size=found.st_size, etag=etag, modified=found.st_mtime)


def _walk(folder: Path, prefix: str) -> Iterator[ObjectInfo]:
    """Every file below `folder` as an object under `prefix` (files that vanish meanwhile, and
    temporary files, are left out)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path), f"{prefix}{entry.name}/")
            elif entry.is_file() and not TEMP_NAME_RE.fullmatch(entry.name):
                yield _info_of(prefix + entry.name, entry.stat())
        except FileNotFoundError:
            continue


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and the missing ones above it; those created (their parents need an
    fsync for the new names to survive a power cut)."""
    missing = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
    return missing


def _temporary(path: Path) -> Path:
    """A temporary name beside `path`, of the form write_atomic uses (never listed)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _copy_into_place(source: Path, dest: Path) -> None:
    """Copy `source` over `dest` (another disk): temporary file, fsync, rename."""
    tmp = _temporary(dest)
    try:
        shutil.copyfile(source, tmp)
        make_durable([tmp], folders=[])
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_hashing(source: Path, dest: Path) -> tuple[str, int]:
    """Copy `source` to `dest` durably; the md5 hex of the bytes and their count."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(source, "rb", buffering=0) as src, open(dest, "wb", buffering=0) as out:
        while piece := src.read(PIECE_BYTES):
            digest.update(piece)
            out.write(piece)
            size += len(piece)
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def _stored_part(folder: Path, part: Part) -> Path:
    """The file of `part`, once it is there with the size and ETag the caller gives."""
    path = folder / f"{part.number:05d}-{part.etag}"
    if not PART_ETAG_RE.fullmatch(part.etag) or not path.is_file():
        raise PartRejected(f"part {part.number} with ETag {part.etag[:40]!r} was not uploaded")
    if path.stat().st_size != part.size:
        raise PartRejected(f"part {part.number} holds {path.stat().st_size} bytes, not {part.size}")
    return path


def _join(files: list[Path], dest: Path) -> None:
    """Concatenate `files` into `dest` in the kernel where it can (copy_file_range), durably."""
    with open(dest, "wb", buffering=0) as out:
        for path in files:
            with open(path, "rb", buffering=0) as src:
                _append(src.fileno(), out.fileno())
        os.fsync(out.fileno())


def _append(src: int, out: int) -> None:
    try:
        while os.copy_file_range(src, out, 64 * PIECE_BYTES):
            pass
    except OSError as exc:
        # Some file systems (and old kernels) refuse it: copy through memory from where it got.
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        while piece := os.read(src, PIECE_BYTES):
            view = memoryview(piece)
            while view:
                view = view[os.write(out, view) :]
