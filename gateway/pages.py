"""The pages the gateway renders for one video: its watch page and its embeddable player.

`/watch/{id}` is the page (index.html) opened on that video, `/embed/{id}` the player alone
(embed.html), meant for an `<iframe>` on any site. Both carry the oEmbed discovery link in
their HTML, written here because oEmbed consumers read the HTML and run no script. Only the
embed page may be framed by other sites (EMBED_FRAME_ANCESTORS); gateway.frames forbids it to
every other answer. Whether the video exists is for the page's script to find out (it shows
the API's message): a malformed id is a 404 at once, with the page and no discovery link.
"""

import html
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from gateway.frames import frame_policy
from services.core import links
from services.core.deps import SettingsDep
from services.core.errors import InvalidInput
from services.core.ids import VIDEO_ID_RE
from services.core.settings import Settings

# Unchecked here: a value that is no token is left out of the links (services.core.links), and
# the page's player shows the streaming service's answer to it.
TokenQuery = Annotated[str | None, Query(description="Playback token of a private video")]


def with_discovery(page: str, oembed_href: str) -> str:
    """`page` with the oEmbed discovery `<link>` at the end of its head."""
    link = (
        '<link rel="alternate" type="application/json+oembed" '
        f'href="{html.escape(oembed_href)}" title="oEmbed">'
    )
    return page.replace("</head>", f"  {link}\n</head>", 1)


def _site_base(settings: Settings, request: Request) -> str | None:
    try:
        return links.public_base(
            settings, scheme=request.url.scheme, host=request.headers.get("host", "")
        )
    except InvalidInput:
        return None  # no usable Host: the page still works, without a discovery link


def render(
    template: Path, request: Request, settings: Settings, page_url: str | None
) -> HTMLResponse:
    """The page at `template`, with the discovery link for `page_url` (its path on this site)
    when it names a video; 404 when it does not."""
    page = template.read_text(encoding="utf-8")
    base = _site_base(settings, request)
    if page_url is not None and base is not None:
        page = with_discovery(page, links.oembed_url(base, base + page_url))
    # Rendered per request (the token, the Host): revalidated each time, and a signed page
    # is kept by no shared cache.
    headers = {"Cache-Control": "private, no-cache" if "token=" in (page_url or "") else "no-cache"}
    return HTMLResponse(page, status_code=200 if page_url else 404, headers=headers)


def video_pages_router(pages: Path) -> APIRouter:
    """`/watch/{id}` (index.html) and `/embed/{id}` (embed.html) from the folder `pages`."""
    router = APIRouter(include_in_schema=False)

    @router.get("/watch/{video_id}")
    async def watch(
        video_id: str, request: Request, settings: SettingsDep, token: TokenQuery = None
    ) -> HTMLResponse:
        known = VIDEO_ID_RE.fullmatch(video_id) is not None
        url = links.watch_url("", video_id, token) if known else None
        return render(pages / "index.html", request, settings, url)

    @router.get("/embed/{video_id}")
    async def embed(
        video_id: str, request: Request, settings: SettingsDep, token: TokenQuery = None
    ) -> HTMLResponse:
        known = VIDEO_ID_RE.fullmatch(video_id) is not None
        url = links.embed_url("", video_id, token) if known else None
        response = render(pages / "embed.html", request, settings, url)
        response.headers["Content-Security-Policy"] = frame_policy(settings.embed_frame_ancestors)
        return response

    return router
