"""Runs: one ffmpeg that encodes a chunk and goes on into the chunks after it.

A chunk is still the unit of work (claimed, leased, checked, recorded and published on its
own), but a worker whose ffmpeg reaches the end of its chunk claims the next one and lets
the same process go on, instead of ending it and starting another: no start-up of the
decoder and four encoders, no drain of their pipelines, and no decoding from the source's
keyframe before the next chunk's start, at every boundary. The run writes into a folder of
its own (`Storage.run_dir`), with EVENT playlists that ffmpeg rewrites as each segment
closes; once a chunk's segments are all closed in every rung, they move into that chunk's
claim folder with a playlist of their own, as if a separate ffmpeg had written them.

Which chunk a segment belongs to is read from time, not from its number: the run's
segments start at its first chunk's start and follow one another, and every chunk boundary
lies on the segment grid, so a segment starting before a chunk's end (less half a segment,
for a first frame that falls just after a boundary) is that chunk's.
"""

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.core import layout
from services.core.jobs import ClaimedChunk
from services.core.storage import write_atomic
from services.media.plan import Plan
from services.media.playlists import media_playlist, read_media_playlist

Segments = list[tuple[str, float]]


def segment_starts(listed: Segments, start: float) -> list[float]:
    """Where each of a run's `listed` segments starts, the run starting at `start`."""
    starts, at = [], start
    for _, seconds in listed:
        starts.append(at)
        at += seconds
    return starts


def segments_between(
    listed: Segments, *, run_start: float, start: float, end: float | None, tolerance: float
) -> Segments:
    """The segments of a run's `listed` ones (the run starting at `run_start`) that belong to
    the chunk [start, end): those starting in [start - tolerance, end - tolerance)."""
    last = float("inf") if end is None else end - tolerance
    return [
        segment
        for segment, at in zip(listed, segment_starts(listed, run_start), strict=True)
        if start - tolerance <= at < last
    ]


def closed_through(listed: Segments, *, run_start: float, end: float, tolerance: float) -> bool:
    """Whether a run's `listed` segments reach `end` (within `tolerance`): every segment that
    starts before it is closed."""
    return run_start + sum(seconds for _, seconds in listed) >= end - tolerance


@dataclass
class Run:
    """One ffmpeg run from chunk `first` on: where it writes, which chunk it encodes now."""

    first: ClaimedChunk
    folder: Path
    plan: Plan
    held: ClaimedChunk = field(init=False)
    # Ended at a boundary on purpose: the next chunk could not be claimed.
    cut: bool = False
    # When the run started, and when it went on into each chunk after its first (monotonic).
    began: float = field(default_factory=time.monotonic)
    since: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.held = self.first

    def progress(self, out_time: float) -> tuple[ClaimedChunk, float]:
        """The chunk the run is on and how far into it (ffmpeg's `out_time` counts from the
        run's start)."""
        return self.held, max(0.0, out_time - (self.held.start - self.first.start))

    @property
    def tolerance(self) -> float:
        return self.plan.options.segment_seconds / 2

    def playlist(self, rung: str) -> Path:
        return self.folder / rung / layout.chunk_playlist(self.first.index)

    def listed(self, rung: str) -> Segments:
        """The segments ffmpeg has closed so far in `rung` (OSError, ValueError: none yet)."""
        return read_media_playlist(self.playlist(rung))

    def closed(self, chunk: ClaimedChunk) -> bool:
        """Whether every rung has closed all of `chunk`'s segments (False when unreadable)."""
        if chunk.end is None:
            return False
        try:
            return all(
                closed_through(
                    self.listed(r.name),
                    run_start=self.first.start,
                    end=chunk.end,
                    tolerance=self.tolerance,
                )
                for r in self.plan.renditions
            )
        except (OSError, ValueError):
            return False  # not written yet (ffmpeg replaces it whole: never half a playlist)

    def split_off(self, chunk: ClaimedChunk, into: Path) -> None:
        """Move `chunk`'s closed segments from the run's folder into `into` (its claim's
        folder, {rung}/ inside) with its own playlist (and init segment, for fMP4). A rung
        that cannot be read is left without a playlist: the chunk's check then fails it."""
        options = self.plan.options
        for rendition in self.plan.renditions:
            rung = rendition.name
            try:
                listed = self.listed(rung)
            except (OSError, ValueError):
                continue
            mine = segments_between(
                listed,
                run_start=self.first.start,
                start=chunk.start,
                end=chunk.end,
                tolerance=self.tolerance,
            )
            target = into / rung
            target.mkdir(parents=True, exist_ok=True)
            for uri, _ in mine:
                os.replace(self.folder / rung / uri, target / uri)
            init = None
            if options.fmp4:
                init = layout.chunk_init(chunk.index)
                source = self.folder / rung / layout.chunk_init(self.first.index)
                if source.is_file():
                    shutil.copyfile(source, target / init)
            text = media_playlist(mine, target=options.segment_seconds, ended=True, init=init)
            write_atomic(target / layout.chunk_playlist(chunk.index), text)
