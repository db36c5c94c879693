"""`vp upload`'s work: files checked before anything is sent, each sent over tus (resumed when
a URL for it is remembered), then, if asked, its transcode followed to the end."""

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from vp import tus
from vp.api import Api
from vp.errors import CliError, Rejected, raise_if_interrupted
from vp.resume import ResumeStore, fingerprint

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Choices:
    """How to send: the ladder codec (None: the server's default), PATCH size, rate limit."""

    codec: str | None
    chunk_size: int
    rate: int | None


def check_files(paths: list[Path]) -> list[Path]:
    """Every file exists, is a regular file, can be read and is not empty, before any upload."""
    for path in paths:
        if not path.exists():
            raise CliError(f"{path}: no such file")
        if not path.is_file():
            raise CliError(f"{path} is not a file: give video files")
        if not os.access(path, os.R_OK):
            raise CliError(f"{path} cannot be read: check its permissions")
        if path.stat().st_size == 0:
            raise CliError(f"{path} is empty: nothing to upload")
    return paths


def _resumable(api: Api, store: ResumeStore, key: str, path: Path) -> tus.Transfer | None:
    """The upload of this file the server still has, if one is remembered."""
    url = store.get(key)
    if url is None:
        return None
    found = tus.find(api, url, size=path.stat().st_size, subject=path.name)
    if found is None:
        store.forget(key)
    return found


def _start(api: Api, store: ResumeStore, key: str, path: Path, choices: Choices) -> tus.Transfer:
    """The file's upload: the remembered one, else a new one (remembered at once)."""
    found = _resumable(api, store, key, path)
    if found is not None:
        return found
    metadata = {"filename": path.name, **({"codec": choices.codec} if choices.codec else {})}
    created = tus.create(api, size=path.stat().st_size, metadata=metadata, subject=path.name)
    store.put(key, created.url, file=path)
    return created


def upload(
    api: Api, store: ResumeStore, path: Path, choices: Choices, bars: Progress
) -> tus.Transfer:
    """Send `path` whole (what the server has is not sent again); returns its upload, whose id
    is the video's id."""
    key = fingerprint(api.target.server, path)
    transfer = _start(api, store, key, path, choices)
    how = f"resuming at {transfer.offset} of" if transfer.offset else "uploading"
    if not bars.disable:
        bars.console.print(f"{path.name}: {how} {transfer.size} bytes as {transfer.video_id}")
    task = bars.add_task(path.name, total=transfer.size, completed=transfer.offset)
    try:
        tus.send(
            api,
            transfer,
            path,
            chunk_size=choices.chunk_size,
            throttle=tus.Throttle(choices.rate),
            report=lambda position: bars.update(task, completed=position),
            subject=path.name,
        )
    except Rejected:
        store.forget(key)  # the server has the file and refused it: sending it again won't do
        raise
    store.forget(key)
    return transfer


def _state(job: dict[str, Any] | None, video: dict[str, Any] | None) -> str:
    if job is not None:
        return str(job["overall"])
    return str(video["status"]) if video else "uploading"


def follow(api: Api, video_id: str, name: str, bars: Progress) -> dict[str, Any]:
    """Poll the transcode until it ends; its final status, or a `CliError` saying why not."""
    task = bars.add_task(f"{name} queued", total=100)
    while True:
        job = api.job(video_id)
        # No job: still registering, or refused at registration (then the record says why).
        video = api.video(video_id) if job is None else None
        state = _state(job, video)
        progress = float(job["progress"]) if job else 0.0
        bars.update(task, completed=progress, description=f"{name} {state}")
        if state == "ok":
            return job or {}
        if state == "failed":
            reason = (job or video or {}).get("error") or "no reason given"
            raise Rejected(f"transcoding {name} ({video_id}) failed: {reason}")
        if state == "stopped":
            raise CliError(
                f"transcoding {name} ({video_id}) was stopped by an operator: once it is "
                f"resumed, `vp status {video_id}` follows it"
            )
        time.sleep(POLL_SECONDS)
        raise_if_interrupted()
