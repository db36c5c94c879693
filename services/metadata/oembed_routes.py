"""`GET /oembed`: oEmbed 1.0 JSON for a watch or embed URL of this site (services.metadata.oembed).

Status codes are the spec's: 404 for a URL that is not a video of this site, 401 for a private
video named without its token, 501 for a format other than json; a malformed maxwidth or
maxheight is a 400.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from services.core import links, signing
from services.core.deps import SessionDep, SettingsDep, StorageDep
from services.core.errors import InvalidInput, NotImplementedHere, Unauthorized
from services.core.models import Status
from services.core.settings import Settings
from services.core.videos import get_video
from services.metadata import oembed

router = APIRouter(tags=["oembed"])
URL_MAX_CHARS = 2048


class OEmbed(BaseModel):
    """An oEmbed 1.0 `video` answer."""

    version: str
    type: str
    provider_name: str
    provider_url: str
    title: str
    html: str
    width: int
    height: int
    thumbnail_url: str | None = None
    thumbnail_width: int | None = None
    thumbnail_height: int | None = None


def request_base(settings: Settings, request: Request) -> str:
    """The site's base URL: PUBLIC_URL, or the scheme and Host the gateway was reached at."""
    # The gateway replaces any X-Forwarded-Host/Proto a client sent with what it saw itself.
    scheme = request.headers.get("x-forwarded-proto") or request.url.scheme
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return links.public_base(settings, scheme=scheme, host=host)


def _check_access(settings: Settings, target: oembed.Target) -> None:
    """With private playback on, only a URL carrying a valid token for the video is answered;
    checked before the video is looked up, so a 401 tells nothing of whether it exists."""
    key = settings.playback_signing_key
    if key and not signing.verify(key, target.video_id, target.token):
        raise Unauthorized(
            "videos here are private: give the signed link (the watch or embed URL with its "
            "?token=…) as url"
        )


def _wanted_format(format_: str | None) -> None:
    if format_ not in (None, "", "json"):
        raise NotImplementedHere(f"format {format_[:16]!r} is not offered: only json is")


@router.get(
    "/oembed",
    response_model=OEmbed,
    response_model_exclude_none=True,
    responses={501: {"description": "A format other than json was asked for"}},
)
def oembed_answer(
    request: Request,
    response: Response,
    settings: SettingsDep,
    session: SessionDep,
    storage: StorageDep,
    url: Annotated[str | None, Query(description="A watch or embed URL of this site")] = None,
    maxwidth: Annotated[str | None, Query(description="Widest frame wanted (pixels)")] = None,
    maxheight: Annotated[str | None, Query(description="Tallest frame wanted (pixels)")] = None,
    format_: Annotated[str | None, Query(alias="format", description="json (the only one)")] = None,
) -> dict[str, str | int]:
    """oEmbed 1.0: the embed `<iframe>` of the video a watch or embed URL names, sized to fit."""
    if not url or len(url) > URL_MAX_CHARS:
        raise InvalidInput(f"give url: a watch or embed URL of this site ({URL_MAX_CHARS} chars)")
    _wanted_format(format_)
    widest, tallest = oembed.pixels(maxwidth, "maxwidth"), oembed.pixels(maxheight, "maxheight")
    base = request_base(settings, request)
    target = oembed.parse_target(url, base)
    _check_access(settings, target)
    record = get_video(session, video_id=target.video_id)
    if settings.playback_signing_key:
        # A token opens one private video: no shared cache may keep what it opened.
        response.headers["Cache-Control"] = "private, no-store"
    video = oembed.Video(
        video_id=record.id,
        title=record.filename,
        width=record.width,
        height=record.height,
        has_poster=record.status == Status.OK or storage.poster_path(record.id).is_file(),
    )
    return oembed.answer(video, target, base=base, maxwidth=widest, maxheight=tallest)
