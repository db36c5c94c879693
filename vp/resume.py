"""Where an interrupted upload is remembered, so running the same command again resumes it.

As tus clients' URL storage does: each file being uploaded is known by a fingerprint (the
server, the file's absolute path, its size and modification time) and maps to its upload URL
on that server. One small JSON file per fingerprint under the user's cache folder
(`~/.cache/vp/uploads/` on Linux, `$XDG_CACHE_HOME` honoured), so two `vp` processes never
rewrite each other's entries. An entry goes once its upload is finished, and is ignored when
the server no longer knows the URL (expired, removed). A file changed since (other size or
time) is another fingerprint, so its new content is never appended to the old bytes.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import platformdirs


def default_folder() -> Path:
    """The per-user folder of upload URLs."""
    return Path(platformdirs.user_cache_dir("vp")) / "uploads"


def fingerprint(server: str, path: Path) -> str:
    """The key of one file's upload to one server: changes when the file does."""
    info = path.stat()
    identity = f"{server}\n{path.resolve()}\n{info.st_size}\n{info.st_mtime_ns}"
    return hashlib.sha256(identity.encode()).hexdigest()


class ResumeStore:
    """Upload URLs by fingerprint, one JSON file each."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or default_folder()

    def _entry(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The upload URL remembered for `key`, if any (an unreadable entry counts as none)."""
        try:
            url = json.loads(self._entry(key).read_text())["url"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return url if isinstance(url, str) else None

    def put(self, key: str, url: str, *, file: Path) -> None:
        """Remember `url` for `key`, written whole or not at all (temporary file + rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"url": url, "file": str(file.resolve())})
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(temporary, self._entry(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def forget(self, key: str) -> None:
        """Drop the entry (the upload finished, or the server forgot it)."""
        with contextlib.suppress(FileNotFoundError):
            self._entry(key).unlink()
