"""Every path the platform reads or writes is built here, from validated ids only.

Layout under the storage root:
    originals/{video_id}/source       the uploaded bytes, written chunk by chunk in place
    hls/{video_id}/master.m3u8        written last, atomically, from what was produced
    hls/{video_id}/{rung}/playlist.m3u8, seg_00000.ts, ...
"""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from services.core import ids
from services.core.errors import NotFound


@dataclass(frozen=True)
class DiskUsage:
    total: int
    used: int
    free: int


class Storage:
    """Paths under one storage root; methods take ids, validate them and return paths."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def ensure_layout(self) -> None:
        """Create the top-level folders (idempotent)."""
        for sub in ("originals", "hls", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def original_dir(self, video_id: str) -> Path:
        return self.root / "originals" / ids.video_id(video_id)

    def source_path(self, video_id: str) -> Path:
        """The original upload's bytes."""
        return self.original_dir(video_id) / "source"

    def hls_dir(self, video_id: str) -> Path:
        return self.root / "hls" / ids.video_id(video_id)

    def rung_dir(self, video_id: str, rung: str) -> Path:
        return self.hls_dir(video_id) / ids.quality(rung)

    def master_path(self, video_id: str) -> Path:
        return self.hls_dir(video_id) / "master.m3u8"

    def complete_marker(self, video_id: str) -> Path:
        """Exists once the presentation is final (VOD): its playlists may then be cached."""
        return self.hls_dir(video_id) / ".complete"

    def playlist_path(self, video_id: str, rung: str) -> Path:
        return self.rung_dir(video_id, rung) / "playlist.m3u8"

    def segment_path(self, video_id: str, rung: str, segment: str) -> Path:
        return self.rung_dir(video_id, rung) / ids.segment(segment)

    def asset_path(self, video_id: str, relative: str) -> Path:
        """A file below hls/{video_id}/ named by a client; must resolve inside that folder."""
        base = self.hls_dir(video_id).resolve()
        # Checked before touching the filesystem: resolve() itself fails on a NUL byte.
        if relative.startswith("/") or "\x00" in relative or len(relative) > 512:
            raise NotFound(f"no asset '{relative[:64]!r}' for video {video_id}")
        candidate = (base / relative).resolve()
        if not candidate.is_relative_to(base):
            raise NotFound(f"no asset '{relative[:64]}' for video {video_id}")
        return candidate

    def delete_renditions(self, video_id: str) -> None:
        """Remove every rendition of a video (before it is encoded anew)."""
        shutil.rmtree(self.hls_dir(video_id), ignore_errors=True)

    def delete_video(self, video_id: str) -> None:
        """Remove the original and every rendition of a video (nothing left on disk)."""
        for folder in (self.original_dir(video_id), self.hls_dir(video_id)):
            shutil.rmtree(folder, ignore_errors=True)

    def disk_usage(self) -> DiskUsage:
        usage = shutil.disk_usage(self.root)
        return DiskUsage(total=usage.total, used=usage.used, free=usage.free)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the whole new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
