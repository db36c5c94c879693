"""oEmbed 1.0 (https://oembed.com) for this site's videos: what a URL names, and the answer.

A consumer (a CMS, a chat app) is given a watch or embed URL of this site, fetches
`/oembed?url=…&maxwidth=…&maxheight=…` and puts the answer's `html`, an `<iframe>` of the
embed page, into its own page. Everything here is pure: no FastAPI, no database.

Sizes: the frame is `maxwidth` wide (DEFAULT_WIDTH without one), as tall as the video's
aspect ratio makes it, and made smaller, aspect kept, to fit `maxheight`. The player scales
the picture to the frame, so a frame wider than the video is fine.
"""

import html
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from services.core import links
from services.core.errors import InvalidInput, NotFound
from services.core.ids import VIDEO_ID_RE
from services.core.signing import TOKEN_RE
from services.media.ladder import plan_ladder
from services.media.thumbnails import poster_size

PROVIDER_NAME = "Video platform"
DEFAULT_WIDTH = 640
# Past a 16K screen no frame makes sense; the bound also keeps the arithmetic small.
MAX_PIXELS = 16384
# The frame of a video whose picture size is unknown (an audio-only one: its player).
DEFAULT_ASPECT = (16, 9)
# What an embed URL may carry over into the iframe: each option and the values it takes.
EMBED_OPTIONS = {
    "autoplay": re.compile(r"[01]"),
    "muted": re.compile(r"[01]"),
    "loop": re.compile(r"[01]"),
    "start": re.compile(r"[0-9]{1,6}(\.[0-9]{1,3})?"),
}
# `#/watch/{id}?token=…`: the page's own deep link (the hash router), still accepted.
HASH_WATCH = re.compile(r"/watch/(?P<id>[^/?#]+)(?:\?(?P<query>.*))?")
PAGE_PATH = re.compile(r"/(?P<kind>watch|embed)/(?P<id>[^/]+)/?")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    """The video a URL of this site names, its playback token and its embed options."""

    video_id: str
    token: str | None = None
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Video:
    """What the answer tells of a video (from its record)."""

    video_id: str
    title: str
    width: int | None
    height: int | None
    has_poster: bool


def pixels(value: str | None, name: str) -> int | None:
    """`maxwidth`/`maxheight` as a number of pixels (None when absent), or InvalidInput."""
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_PIXELS:
        raise InvalidInput(
            f"{name} must be a whole number of pixels from 1 to {MAX_PIXELS}, not {value[:32]!r}"
        )
    return int(value)


def _origin(scheme: str, host: str | None, port: int | None) -> tuple[str, int | None]:
    return (host or "").lower(), port or DEFAULT_PORTS.get(scheme)


def _on_this_site(url: str, base: str) -> str:
    """The path of `url` below the site's base path, or NotFound for another site's URL."""
    try:
        parsed, site = urlsplit(url), urlsplit(base)
        same = parsed.scheme in DEFAULT_PORTS and _origin(
            site.scheme, parsed.hostname, parsed.port
        ) == _origin(site.scheme, site.hostname, site.port)
    except ValueError:  # a port that is not a number
        same = False
    prefix = site.path.rstrip("/")
    if not same or not (parsed.path + "/").startswith(prefix + "/"):
        raise NotFound(f"{url[:200]!r} is not an address of this site ({base}): {_expected(base)}")
    return parsed.path[len(prefix) :]


def _expected(base: str) -> str:
    return f"give {base}{links.WATCH_PATH}{{id}} or {base}{links.EMBED_PATH}{{id}}"


def parse_target(url: str, base: str) -> Target:
    """The video a watch or embed URL of this site names, or NotFound for any other URL."""
    path = _on_this_site(url, base)
    parsed = urlsplit(url)
    page = PAGE_PATH.fullmatch(path)
    in_hash = HASH_WATCH.fullmatch(parsed.fragment) if path in ("", "/") else None
    if page is not None:
        kind, raw_id, query = page["kind"], page["id"], parsed.query
    elif in_hash is not None:
        kind, raw_id, query = "watch", in_hash["id"], in_hash["query"] or ""
    else:
        raise NotFound(f"{url[:200]!r} is not a video's page: {_expected(base)}")
    video_id = unquote(raw_id)
    if not VIDEO_ID_RE.fullmatch(video_id):
        raise NotFound(f"no video {video_id[:64]!r}: an id is 32 lowercase hex characters")
    params = parse_qs(query)
    token = params.get("token", [None])[0]
    if token is not None and not TOKEN_RE.fullmatch(token):
        token = None  # not a token at all: as if none was given (a private video then is 401)
    options = {}
    if kind == "embed":
        options = {
            name: params[name][0]
            for name, pattern in EMBED_OPTIONS.items()
            if name in params and pattern.fullmatch(params[name][0])
        }
    return Target(video_id, token, options)


def frame_size(
    aspect: tuple[int, int], maxwidth: int | None, maxheight: int | None
) -> tuple[int, int]:
    """The iframe's width and height: `aspect` kept, within `maxwidth` and `maxheight`."""
    aspect_w, aspect_h = aspect
    width = maxwidth or DEFAULT_WIDTH
    height = round(width * aspect_h / aspect_w)
    if maxheight is not None and height > maxheight:
        height = maxheight
        width = min(width, round(maxheight * aspect_w / aspect_h))
    return max(1, width), max(1, height)


def iframe_html(src: str, width: int, height: int, title: str) -> str:
    """The `<iframe>` of the embed page (autoplay and full screen allowed to it)."""
    return (
        f'<iframe src="{html.escape(src)}" width="{width}" height="{height}" '
        f'title="{html.escape(title)}" frameborder="0" '
        'allow="autoplay; fullscreen; picture-in-picture" allowfullscreen></iframe>'
    )


def _picture(video: Video) -> tuple[int, int] | None:
    if video.width and video.height and min(video.width, video.height) >= 2:
        return video.width, video.height
    return None


def answer(
    video: Video,
    target: Target,
    *,
    base: str,
    maxwidth: int | None,
    maxheight: int | None,
) -> dict[str, str | int]:
    """The oEmbed 1.0 `video` answer for `video`, sized to fit `maxwidth` x `maxheight`."""
    picture = _picture(video)
    width, height = frame_size(picture or DEFAULT_ASPECT, maxwidth, maxheight)
    src = links.embed_url(base, video.video_id, target.token, target.options)
    result: dict[str, str | int] = {
        "version": "1.0",
        "type": "video",
        "provider_name": PROVIDER_NAME,
        "provider_url": f"{base}/",
        "title": video.title,
        "html": iframe_html(src, width, height, video.title),
        "width": width,
        "height": height,
    }
    if picture and video.has_poster:
        top = plan_ladder(*picture)[0]
        thumb_width, thumb_height = poster_size(top.width, top.height)
        result |= {
            "thumbnail_url": links.poster_url(base, video.video_id, target.token),
            "thumbnail_width": thumb_width,
            "thumbnail_height": thumb_height,
        }
    return result
