"""The public addresses of a video: its watch page, its embed page and its oEmbed answer.

They are written into HTML (discovery links) and JSON (oEmbed), so they are built here, once,
from a base URL that is PUBLIC_URL when set, or else the scheme and Host the request came with
(through the gateway, which passes the browser's Host on as X-Forwarded-Host). The gateway
and the metadata service both use it; neither spells these paths itself.
"""

import re
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from services.core.errors import InvalidInput
from services.core.settings import Settings
from services.core.signing import TOKEN_RE

# A Host header as browsers send it: a name or an IPv4/IPv6 address, and an optional port.
# Anything else (quotes, spaces, slashes) would break out of the URLs and HTML built on it.
HOST_RE = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
WATCH_PATH = "/watch/"
EMBED_PATH = "/embed/"
OEMBED_PATH = "/oembed"


def public_base(settings: Settings, *, scheme: str, host: str) -> str:
    """The site's base URL (no trailing slash): PUBLIC_URL, or `scheme://host` of the request."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    if scheme not in ("http", "https") or not HOST_RE.fullmatch(host):
        raise InvalidInput(
            f"the request's Host {host[:64]!r} is not a host name: send a valid Host header, "
            "or set PUBLIC_URL to the site's public address"
        )
    return f"{scheme}://{host}"


def _query(token: str | None, options: Mapping[str, str] | None = None) -> str:
    """`?token=…&…`, or "" with neither; a token that is not one is left out, not escaped."""
    pairs = dict(options or {})
    if token and TOKEN_RE.fullmatch(token):
        pairs = {"token": token, **pairs}
    return f"?{urlencode(pairs)}" if pairs else ""


def watch_url(base: str, video_id: str, token: str | None = None) -> str:
    """The watch page of a video (the page's player), with its playback token if private."""
    return f"{base}{WATCH_PATH}{quote(video_id, safe='')}{_query(token)}"


def embed_url(
    base: str, video_id: str, token: str | None = None, options: Mapping[str, str] | None = None
) -> str:
    """The embeddable player of a video, with its playback token and player options."""
    return f"{base}{EMBED_PATH}{quote(video_id, safe='')}{_query(token, options)}"


def oembed_url(base: str, target: str) -> str:
    """The oEmbed answer (JSON) for the page at `target`."""
    return f"{base}{OEMBED_PATH}?{urlencode({'url': target, 'format': 'json'})}"


def poster_url(base: str, video_id: str, token: str | None = None) -> str:
    """The video's poster picture (JPEG), with its playback token if private."""
    return f"{base}/stream/{quote(video_id, safe='')}/poster.jpg{_query(token)}"
