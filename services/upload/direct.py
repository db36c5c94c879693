"""Direct upload URLs: one upload that a browser (or a script) may send without any other token,
as Mux direct uploads and Cloudflare direct creator uploads allow.

Someone who holds the admin token (or the upload token, when UPLOAD_TOKEN is set) creates one
(`create`) with the video's settings (name, codec, private) and its limits: the most bytes, an
expiry, and the one browser origin that may send it. They hand its URL to the browser; the
token is in the URL's query (`?direct_token=...`), so a tus client, Uppy or a plain `fetch`
needs nothing else, and the token never has to be sent as a header.

The token opens exactly one upload:

- its first use creates the upload (a tus `POST /files/`, or a chunked `POST /upload/init`);
  the upload's id is claimed for the token before the upload exists (`claimed`), so two
  first uses cannot both create one;
- every later request must name that upload (tus `/files/{id}`, the chunked `upload_id`);
- it stops working when the upload completes (410) or at its expiry (410), whichever is
  first; an unknown token is a 403, as is a request from another browser origin (browsers
  always send Origin; a request without one is a script's, which CORS does not concern).

Only the token's sha256 is stored (`DirectUpload`): the database opens no upload by itself.
Nothing here knows HTTP; `direct_routes.py` adapts it.
"""

import hashlib
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.core import ids
from services.core.auth import Presented, check_admin, check_uploader
from services.core.cors import DIRECT_TOKEN
from services.core.db import session_scope
from services.core.errors import (
    AppError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TooLarge,
)
from services.core.models import DirectUpload, Upload, as_utc, utcnow
from services.core.settings import Settings
from services.upload import uploads

MIN_SECONDS = 60
DEFAULT_SECONDS = 3600
MAX_TOKEN = 128
# scheme://host[:port], as a browser writes its Origin header (no path, no trailing slash).
ORIGIN_RE = re.compile(r"https?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


class DirectUploadGone(AppError):
    """The direct upload URL has expired, or its upload is complete."""

    code, status = "direct_upload_gone", 410


@dataclass(frozen=True)
class Spec:
    """What a direct upload is created with (checked by `create`)."""

    max_size: int | None = None
    expires_in: int = DEFAULT_SECONDS
    cors_origin: str | None = None
    name: str | None = None
    private: bool | None = None
    codec: str | None = None


@dataclass(frozen=True)
class Grant:
    """What a valid direct upload token allows: one upload, within these limits."""

    id: str
    token: str
    upload_id: str | None  # None until its first use creates the upload
    max_size: int
    cors_origin: str | None
    name: str | None
    codec: str | None
    expires_at: datetime


def token_digest(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- creation ---------------------------------------------------------------------------------


def create(settings: Settings, spec: Spec) -> tuple[DirectUpload, str]:
    """A new direct upload and its token (shown once: only its sha256 is kept)."""
    checked = _checked(settings, spec)
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = DirectUpload(
        id=ids.new_video_id(),
        token_sha256=token_digest(token),
        max_size=checked.max_size,
        cors_origin=checked.cors_origin,
        name=checked.name,
        codec=checked.codec,
        private=checked.private,
        created_at=now,
        expires_at=now + timedelta(seconds=checked.expires_in),
    )
    with session_scope(settings) as session:
        session.add(row)
    return row, token


def _checked(settings: Settings, spec: Spec) -> Spec:
    """`spec` with its defaults filled in, or InvalidInput/Conflict saying what to change."""
    most = settings.max_upload_bytes
    size = most if spec.max_size is None else spec.max_size
    if not 1 <= size <= most:
        raise InvalidInput(f"max_size must be between 1 and {most} bytes (MAX_UPLOAD_BYTES)")
    longest = settings.direct_upload_max_seconds
    if not MIN_SECONDS <= spec.expires_in <= longest:
        raise InvalidInput(
            f"expires_in must be between {MIN_SECONDS} and {longest} seconds "
            "(DIRECT_UPLOAD_MAX_SECONDS)"
        )
    _check_private(settings, spec.private)
    return Spec(
        max_size=size,
        expires_in=spec.expires_in,
        cors_origin=_origin(spec.cors_origin),
        name=uploads.video_label(settings, spec.name) if spec.name else None,
        private=bool(settings.playback_signing_key),
        codec=uploads.check_codec(spec.codec),
    )


def _origin(value: str | None) -> str | None:
    """The cors_origin as browsers write Origin (`https://example.com[:port]`), or None."""
    if value is None or not value.strip():
        return None
    origin = value.strip().rstrip("/")
    if not ORIGIN_RE.fullmatch(origin):
        raise InvalidInput(
            f"cors_origin {value[:100]!r} is not an origin: write it as the browser sends it, "
            "scheme://host[:port] with no path (e.g. https://app.example.com)"
        )
    return origin.lower()


def _check_private(settings: Settings, private: bool | None) -> None:
    """Private playback is the server's (PLAYBACK_SIGNING_KEY), for every video: a request
    that asks for the other is refused rather than quietly not granted."""
    signed = bool(settings.playback_signing_key)
    if private is None or private == signed:
        return
    if private:
        raise Conflict(
            "private playback is off on this server: the operator sets PLAYBACK_SIGNING_KEY "
            "(every video then needs a signed playback token); or leave private out"
        )
    raise Conflict(
        "playback is private for every video on this server (PLAYBACK_SIGNING_KEY is set): "
        "leave private out, or send private: true"
    )


# --- use --------------------------------------------------------------------------------------


def admit(settings: Settings, *, token: str, origin: str | None, upload_id: str | None) -> Grant:
    """The grant of `token` for a request from `origin` about `upload_id` (None: a request
    that creates the upload, or names it only in its body); else the 4xx that says why."""
    grant = _grant(settings, token)
    if origin is not None and origin.lower() != grant.cors_origin:
        allowed = (
            f"only {grant.cors_origin} may send it"
            if grant.cors_origin
            else "it was made without a cors_origin, for scripts and servers only"
        )
        raise Forbidden(
            f"this direct upload URL does not accept requests from {origin[:100]}: {allowed}",
            code="origin_not_allowed",
        )
    if upload_id is not None:
        only(grant, upload_id)
    return grant


def only(grant: Grant, upload_id: str) -> None:
    """Forbidden unless `upload_id` is the one upload the grant opens."""
    if grant.upload_id is None:
        raise Forbidden(
            "this direct upload URL has not started its upload yet: create it first "
            "(tus POST to the URL, or POST /upload/init with it)",
            code="wrong_upload",
        )
    if upload_id != grant.upload_id:
        raise Forbidden(
            f"this direct upload URL opens upload {grant.upload_id} only, not {upload_id[:64]}",
            code="wrong_upload",
        )


def _grant(settings: Settings, token: str) -> Grant:
    """The token's grant if it is known, unused and unexpired."""
    if not token or len(token) > MAX_TOKEN:
        raise Forbidden("the direct_token is empty or too long", code="direct_token_unknown")
    with session_scope(settings) as session:
        row = session.scalar(
            select(DirectUpload).where(DirectUpload.token_sha256 == token_digest(token))
        )
        completed = row is not None and row.upload_id is not None and _completed(session, row)
    if row is None:
        raise Forbidden(
            "this direct upload URL is not known: ask for a new one (POST /upload/direct)",
            code="direct_token_unknown",
        )
    if completed:
        raise DirectUploadGone(
            f"this direct upload URL has been used: its upload is complete and is now video "
            f"{row.upload_id}; a direct upload URL opens one upload"
        )
    expires_at = as_utc(row.expires_at)
    assert expires_at is not None
    if expires_at <= utcnow():
        raise DirectUploadGone(
            f"this direct upload URL expired at {expires_at.isoformat()}: ask for a new one"
        )
    return Grant(
        id=row.id,
        token=token,
        upload_id=row.upload_id,
        max_size=row.max_size,
        cors_origin=row.cors_origin,
        name=row.name,
        codec=row.codec,
        expires_at=expires_at,
    )


def _completed(session: Session, row: DirectUpload) -> bool:
    return bool(session.scalar(select(Upload.completed).where(Upload.id == row.upload_id)))


def check_size(grant: Grant, size: int | None) -> int:
    """The upload's declared size, within the grant's max_size (a direct upload declares it:
    no deferred length, so every byte is bounded before it is sent)."""
    if size is None:
        raise InvalidInput(
            "a direct upload declares its size: send Upload-Length (tus) or total_size (chunked)"
        )
    if size > grant.max_size:
        raise TooLarge(
            f"the file has {size} bytes; this direct upload URL takes at most "
            f"{grant.max_size} bytes"
        )
    return size


@contextmanager
def claimed(settings: Settings, grant: Grant | None) -> Iterator[str | None]:
    """Reserve the id of the grant's one upload for the `with` block, which creates it; the
    reservation is given back if the block fails (the upload was not created). Without a
    grant, nothing to reserve: None (the upload gets a new id)."""
    if grant is None:
        yield None
        return
    upload_id = ids.new_video_id()
    with session_scope(settings) as session:
        taken = session.execute(
            update(DirectUpload)
            .where(DirectUpload.id == grant.id, DirectUpload.upload_id.is_(None))
            .values(upload_id=upload_id)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(
                "this direct upload URL has already started its upload: resume that one "
                "(tus: HEAD its Location; chunked: GET /upload/{upload_id})",
                code="direct_upload_started",
            )
    try:
        yield upload_id
    except BaseException:
        with session_scope(settings) as session:
            session.execute(
                update(DirectUpload)
                .where(DirectUpload.id == grant.id, DirectUpload.upload_id == upload_id)
                .values(upload_id=None)
            )
        raise


def check_access(presented: Presented, settings: Settings) -> Grant | None:
    """The upload routes' access rule: a request with a direct token is held to that token's
    grant (whatever else it carries); any other needs the upload token when one is set."""
    token = presented.query.get(DIRECT_TOKEN)
    if token is None:
        check_uploader(presented.bearer, settings)
        return None
    named = presented.path_params.get("upload_id") or presented.query.get("upload_id")
    return admit(settings, token=token, origin=presented.origin, upload_id=named)


def check_creator(presented: Presented, settings: Settings) -> None:
    """Who may create direct upload URLs: the admin token, or the upload token when set."""
    if settings.upload_token and presented.bearer == settings.upload_token:
        check_uploader(presented.bearer, settings)  # the constant-time comparison
        return
    check_admin(presented.bearer, settings)


# --- what it became ---------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """A direct upload as its creator sees it."""

    row: DirectUpload
    status: str  # waiting | uploading | completed | cancelled | expired
    video_id: str | None


def state(settings: Settings, direct_id: str) -> State:
    """Where a direct upload stands (NotFound for an unknown id)."""
    with session_scope(settings) as session:
        row = session.get(DirectUpload, ids.video_id(direct_id))
        if row is None:
            raise NotFound(f"no direct upload {direct_id}")
        upload = session.get(Upload, row.upload_id) if row.upload_id else None
        session.expunge(row)
    expires_at = as_utc(row.expires_at)
    assert expires_at is not None
    if upload is not None and upload.completed:
        return State(row, "completed", upload.id)
    if expires_at <= utcnow():
        return State(row, "expired", None)
    if row.upload_id is None:
        return State(row, "waiting", None)
    return State(row, "uploading" if upload is not None else "cancelled", None)


def cors_origin_of(settings: Settings, token: str) -> str | None:
    """The origin a token's URL was made for (None: unknown token, or none): for the CORS
    headers, which every answer to that origin carries, refusals included."""
    if not token or len(token) > MAX_TOKEN:
        return None
    with session_scope(settings) as session:
        return session.scalar(
            select(DirectUpload.cors_origin).where(DirectUpload.token_sha256 == token_digest(token))
        )
