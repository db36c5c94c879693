"""Watching what is put on the disk: os.fsync and os.replace wrapped, still run on real files.

The disk itself is not under test (a power cut cannot be staged); the order of the calls that
make the kernel write bytes and names is.
"""

import os
import threading
from pathlib import Path
from unittest import mock


class DiskCalls:
    """Records each os.fsync (by the path its descriptor names) and os.replace, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self._add("fsync", os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        def replace(src: str | Path, dst: str | Path) -> None:
            self._add("replace", f"{src} -> {dst}")
            real_replace(src, dst)

        self.patches = [
            mock.patch("os.fsync", side_effect=fsync),
            mock.patch("os.replace", side_effect=replace),
        ]

    def _add(self, kind: str, what: str) -> None:
        with self.lock:
            self.calls.append((kind, what))

    def synced(self) -> set[str]:
        with self.lock:
            return {what for kind, what in self.calls if kind == "fsync"}

    def __enter__(self) -> "DiskCalls":
        for patch in self.patches:
            patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for patch in self.patches:
            patch.stop()
