"""The tables every service shares: videos, uploads and their chunks, transcoding jobs, the
event trail, the webhook outbox and the videos' captions."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.core.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status:
    """Video / job states, shared by every service."""

    UPLOADING = "uploading"
    QUEUED = "queued"
    RUNNING = "running"
    STOPPED = "stopped"
    OK = "ok"
    FAILED = "failed"
    UNFINISHED = (QUEUED, RUNNING, STOPPED)


class Video(Base):
    """One video: the upload id is its id from `init` on."""

    __tablename__ = "videos"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    duration: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None] = mapped_column(Float)
    video_codec: Mapped[str | None] = mapped_column(String(32))
    audio_codec: Mapped[str | None] = mapped_column(String(32))
    # The ladder's codec ("h264" | "hevc"), fixed at complete: a start-over keeps it.
    codec: Mapped[str] = mapped_column(String(8), default="h264", server_default="h264")
    status: Mapped[str] = mapped_column(String(16), default=Status.UPLOADING, index=True)
    qualities: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Upload(Base):
    """A chunked upload in progress (or finished): what was declared at `init`."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    total_chunks: Mapped[int] = mapped_column(Integer)
    total_size: Mapped[int | None] = mapped_column(BigInteger)
    chunk_size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    completed: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    # tus uploads only (services/upload/tus.py); NULL offset = a chunked upload. The offset
    # counts the bytes durably stored; each PATCH's bytes are one UploadChunk row.
    tus_offset: Mapped[int | None] = mapped_column(BigInteger)
    tus_metadata: Mapped[str | None] = mapped_column(Text)  # Upload-Metadata, as received
    tus_concat: Mapped[str | None] = mapped_column(Text)  # Upload-Concat, as received
    # The ladder codec chosen at init; NULL = DEFAULT_CODEC when the upload completes.
    codec: Mapped[str | None] = mapped_column(String(8))
    # STORAGE_URL on a bucket only (services/upload/remote.py): the source's multipart upload
    # and the size of each of its parts but the last; NULL on the local folder.
    multipart_id: Mapped[str | None] = mapped_column(Text)
    part_bytes: Mapped[int | None] = mapped_column(BigInteger)


class UploadPart(Base):
    """A part of an upload's source sent to the bucket (its local bytes are freed)."""

    __tablename__ = "upload_parts"

    upload_id: Mapped[str] = mapped_column(
        ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    etag: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)


class DirectUpload(Base):
    """A direct upload URL: one upload that a holder of its token may send, without any
    other token, until it expires or the upload completes (services/upload/direct.py)."""

    __tablename__ = "direct_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Only the token's sha256 is kept: a copy of the database opens no upload.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # The upload its first use created; NULL until then.
    upload_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    max_size: Mapped[int] = mapped_column(BigInteger)
    # The one browser origin that may send it; NULL: no browser (scripts and servers only).
    cors_origin: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))  # the video's name; NULL: the file's
    codec: Mapped[str | None] = mapped_column(String(8))
    private: Mapped[bool | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UploadChunk(Base):
    """A chunk that is fully on disk; a row exists only after its bytes were written."""

    __tablename__ = "upload_chunks"

    upload_id: Mapped[str] = mapped_column(
        ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    # `algorithm:hex` of the chunk's bytes, what a resend is compared with (upload/digests.py).
    digest: Mapped[str] = mapped_column(String(80))


class Job(Base):
    """The transcoding job of a video: its plan, state and how much of it is published.

    The work itself is in `JobChunk` rows; `worker_id`/`lease_expires_at` here only guard the
    planning step (probe + cut into chunks), which one worker does once.
    """

    __tablename__ = "jobs"

    video_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED, index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    qualities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    # none_as_null: a cleared plan must be SQL NULL, which "not planned yet" looks for.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    total_chunks: Mapped[int] = mapped_column(Integer, default=0)
    published_chunks: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ChunkStatus:
    """States of one unit of work."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobChunk(Base):
    """One unit of work: a time range of the video for every rung, or the whole audio.

    Workers claim it with a lease and renew the lease while ffmpeg runs; `encodes` counts
    every start of ffmpeg on it, so a resume that re-encodes finished work shows.
    """

    __tablename__ = "job_chunks"

    video_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.video_id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)  # -1 is the audio unit
    kind: Mapped[str] = mapped_column(String(8))  # "video" | "audio"
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default=ChunkStatus.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    encodes: Mapped[int] = mapped_column(Integer, default=0)
    out_time: Mapped[float] = mapped_column(Float, default=0.0)
    encode_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    done_by: Mapped[str | None] = mapped_column(String(128))
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class CaptionOrigin:
    """Where a caption came from."""

    UPLOAD = "upload"  # POST /videos/{id}/captions
    EMBEDDED = "embedded"  # a text subtitle stream of the source, extracted when planned


class Caption(Base):
    """One caption (subtitle track) of a video: its WebVTT file is
    `Storage.caption_source_path`, its HLS rendition a SUBTITLES entry of the master."""

    __tablename__ = "captions"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    language: Mapped[str] = mapped_column(String(64))  # a BCP 47 tag, in its standard form
    label: Mapped[str] = mapped_column(String(128))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    origin: Mapped[str] = mapped_column(String(16))
    # What it was: "vtt" or "srt" (uploaded), the source stream's codec (embedded).
    source_format: Mapped[str] = mapped_column(String(32))
    stream_index: Mapped[int | None] = mapped_column(Integer)  # embedded: the source's stream
    cues: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Sweep(Base):
    """One run of the abandoned-upload sweep and what it reclaimed."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ran_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    uploads_removed: Mapped[int] = mapped_column(Integer, default=0)
    bytes_reclaimed: Mapped[int] = mapped_column(BigInteger, default=0)


class VideoEvent(Base):
    """One entry of a video's trail: a status change (from -> to) or a notable step, and why.

    Ordered by `id`. Kept when the video is deleted: the trail says what happened to it.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_id: Mapped[str] = mapped_column(String(32), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(128))


class DeliveryStatus:
    """States of one webhook delivery."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(Base):
    """The outbox: one event to send to one configured URL, written with the event itself.

    Senders claim a due row with a lease (like job chunks), so a sender killed mid-request
    leaves it to be sent again: delivery is at least once; `id` lets receivers drop repeats.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    video_id: Mapped[str] = mapped_column(String(32), index=True)
    type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    # The exact bytes signed and sent, fixed at the event: every retry sends the same body.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; every stored time is UTC, so say so."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
