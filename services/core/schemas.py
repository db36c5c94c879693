"""Response and request models shared by the services (what `/docs` shows)."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from services.core.models import Job, Video, as_utc
from services.core.redact import public_text

JobState = Literal["queued", "running", "stopped", "ok", "failed"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    """A label as a request may set it: no control characters. (PostgreSQL's text cannot
    hold NUL at all: stored, it was a 500; the other ones break the lines a label is shown
    on. Uploaded names lose them the same way: `uploads.clean_filename`.)"""
    if found := _CONTROL.search(text):
        raise ValueError(
            f"must be one line of text, without control characters ({found.group()!r} found)"
        )
    return text


# Text a client sets and the database keeps: a name, a codec's name.
OneLine = Annotated[str, AfterValidator(_one_line)]


def _public(error: str | None) -> str | None:
    # Errors are made public where they are recorded; this also covers rows from before that.
    return public_text(error) if error else error


class VideoOut(BaseModel):
    """A video record."""

    id: str = Field(description="32 lowercase hex characters; also the upload id")
    filename: str = Field(description="The uploaded file's name, kept as a label only")
    size: int | None = Field(None, description="Bytes of the original")
    sha256: str | None = Field(None, description="sha256 of the original's content")
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    status: str = Field(description="uploading | queued | running | stopped | ok | failed")
    qualities: list[str] = Field(
        default_factory=list, description='Rungs produced ("audio" alone: an audio-only video)'
    )
    audio_only: bool = Field(
        False, description="Sound with no picture: played as audio-only HLS, no poster"
    )
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, video: Video) -> "VideoOut":
        return cls(
            id=video.id,
            filename=video.filename,
            size=video.size,
            sha256=video.sha256,
            duration=video.duration,
            width=video.width,
            height=video.height,
            fps=video.fps,
            video_codec=video.video_codec,
            audio_codec=video.audio_codec,
            status=video.status,
            qualities=list(video.qualities or []),
            # The upload's probe leaves the picture's facts unknown for an audio-only source.
            audio_only=video.audio_codec is not None and video.video_codec is None,
            error=_public(video.error),
            created_at=as_utc(video.created_at),
            updated_at=as_utc(video.updated_at),
        )


class QualityProgress(BaseModel):
    status: str
    progress: float = Field(ge=0, le=100)


class TranscodeStatus(BaseModel):
    """A transcoding job's state; progress never goes backwards while running."""

    upload_id: str
    overall: JobState
    progress: float = Field(ge=0, le=100)
    qualities: dict[str, QualityProgress] = Field(default_factory=dict)
    error: str | None = None
    chunks: dict[str, int] = Field(
        default_factory=dict, description="Units of work by state (pending, running, done, failed)"
    )
    chunks_published: int = Field(0, description="Time chunks listed in the playlists so far")
    chunks_total: int = Field(
        0, description="Time chunks the video is cut into (audio only: 1, the audio)"
    )
    playable: bool = Field(False, description="The master playlist can be played already")
    updated_at: datetime | None = None

    @classmethod
    def of(cls, job: Job, chunks: dict[str, int] | None = None) -> "TranscodeStatus":
        qualities: dict[str, Any] = job.qualities or {}
        return cls(
            upload_id=job.video_id,
            overall=job.status,
            progress=round(min(100.0, job.progress), 2),
            qualities={k: QualityProgress(**v) for k, v in qualities.items()},
            error=_public(job.error),
            chunks=chunks or {},
            chunks_published=job.published_chunks,
            chunks_total=job.total_chunks,
            playable=job.published_chunks > 0,
            updated_at=as_utc(job.updated_at),
        )


class VideoIdBody(BaseModel):
    upload_id: str = Field(description="The video id returned by /upload/init")


class Resumed(BaseModel):
    resumed: list[str] = Field(description="Video ids put back in the queue")


class Deleted(BaseModel):
    deleted: str
