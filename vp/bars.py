"""The progress bars (rich): bytes, speed and time left for an upload; percent and time for a
transcode. They draw on stderr, so stdout carries only the results (ids, URLs)."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

# Notes and bars: stderr. Results: stdout (see vp.main).
notes = Console(stderr=True, highlight=False, soft_wrap=True)


def transfer_bars(*, quiet: bool) -> Progress:
    """One bar per file being uploaded (none when `quiet`)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=notes,
        disable=quiet,
    )


def transcode_bars(*, quiet: bool) -> Progress:
    """One bar per video being transcoded, its state in the description (none when `quiet`)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=notes,
        disable=quiet,
    )
