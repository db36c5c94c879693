"""The embed page, /watch/{id}, oEmbed and the frame headers, over HTTP on a real platform.

oEmbed consumers (a CMS, a chat app) read the page's HTML for the discovery link and ask
/oembed for the iframe: everything here is what such a consumer sees, run no script.
"""

import html
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.harness import Platform, upload, wait_status

MiB = 1024 * 1024
UNKNOWN_ID = "0" * 31 + "a"
DISCOVERY = re.compile(r'<link rel="alternate" type="application/json\+oembed" href="([^"]+)"')
PUBLIC_URL = "https://videos.example.test"
CMS = "https://cms.example.test"


@pytest.fixture(scope="module")
def video_id(client: httpx.Client, clips: dict[str, Path]) -> str:
    """clips["small"] (640x360) uploaded and transcoded."""
    uploaded, done = upload(client, clips["small"], chunk_size=MiB)
    assert done is not None and done.status_code == 200, done.text
    assert wait_status(client, uploaded)["overall"] == "ok"
    return uploaded


def oembed(client: httpx.Client, url: str, **params: str) -> httpx.Response:
    return client.get("/oembed", params={"url": url, **params})


def discovery_href(page: httpx.Response) -> str:
    found = DISCOVERY.search(page.text)
    assert found, "no oEmbed discovery link in the page"
    return html.unescape(found.group(1))


def frame_attributes(snippet: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in re.findall(r'(\w+)="([^"]*)"', snippet)}


def picture_size(path: Path) -> tuple[int, int]:
    """Width and height of a picture, as ffprobe reads them."""
    shown = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    width, height = shown.split(",")
    return int(width), int(height)


# ---------------------------------------------------------------- oEmbed


def test_oembed_for_a_watch_url_sizes_the_embed_to_maxwidth(
    client: httpx.Client, platform: Platform, video_id: str, clips: dict[str, Path], tmp_path: Path
) -> None:
    response = oembed(client, f"{platform.url}/watch/{video_id}", maxwidth="400")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["version"] == "1.0" and body["type"] == "video"
    assert body["title"] == clips["small"].name
    assert body["provider_name"]
    assert (body["width"], body["height"]) == (400, 225)
    frame = frame_attributes(body["html"])
    assert body["html"].startswith("<iframe ") and body["html"].endswith("</iframe>")
    assert frame["src"] == f"{platform.url}/embed/{video_id}"
    assert (frame["width"], frame["height"]) == ("400", "225")
    assert (body["thumbnail_width"], body["thumbnail_height"]) == (640, 360)
    poster = client.get(body["thumbnail_url"])
    assert poster.status_code == 200 and poster.headers["content-type"] == "image/jpeg"
    # The size told is the picture's own.
    picture = tmp_path / "poster.jpg"
    picture.write_bytes(poster.content)
    assert picture_size(picture) == (body["thumbnail_width"], body["thumbnail_height"])
    # The iframe's page is the embed player.
    assert 'class="embed"' in client.get(frame["src"]).text


def test_oembed_for_an_embed_url_keeps_its_options_and_fits_maxheight(
    client: httpx.Client, platform: Platform, video_id: str
) -> None:
    url = f"{platform.url}/embed/{video_id}?autoplay=1&muted=1&start=2&loop=maybe"
    body = oembed(client, url, maxwidth="1000", maxheight="300", format="json").json()

    assert (body["width"], body["height"]) == (533, 300)
    src = frame_attributes(body["html"])["src"]
    assert src == f"{platform.url}/embed/{video_id}?autoplay=1&muted=1&start=2"


def test_oembed_takes_the_pages_own_hash_link_and_is_640_wide_by_default(
    client: httpx.Client, platform: Platform, video_id: str
) -> None:
    body = oembed(client, f"{platform.url}/#/watch/{video_id}").json()
    assert (body["width"], body["height"]) == (640, 360)


def test_oembed_of_an_unknown_video_is_404(client: httpx.Client, platform: Platform) -> None:
    response = oembed(client, f"{platform.url}/watch/{UNKNOWN_ID}")
    assert response.status_code == 404
    assert response.json()["detail"] == f"no video {UNKNOWN_ID}"


@pytest.mark.parametrize(
    "url",
    [
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "http://127.0.0.2:{port}/watch/{id}",  # another host
        "http://127.0.0.1:1/watch/{id}",  # another port of this host
    ],
)
def test_oembed_of_another_sites_url_is_404(
    client: httpx.Client, platform: Platform, video_id: str, url: str
) -> None:
    url = url.format(port=platform.ports["gateway"], id=video_id)
    response = oembed(client, url)
    assert response.status_code == 404
    assert "is not an address of this site" in response.json()["detail"]


def test_oembed_of_a_page_that_shows_no_video_is_404(
    client: httpx.Client, platform: Platform
) -> None:
    response = oembed(client, f"{platform.url}/#/console")
    assert response.status_code == 404
    assert "/watch/{id}" in response.json()["detail"]


def test_oembed_as_xml_is_501(client: httpx.Client, platform: Platform, video_id: str) -> None:
    response = oembed(client, f"{platform.url}/watch/{video_id}", format="xml")
    assert response.status_code == 501
    assert response.json()["detail"] == "format 'xml' is not offered: only json is"


@pytest.mark.parametrize("maxwidth", ["wide", "0", "-1", "99999", "12.5"])
def test_oembed_with_a_bad_maxwidth_is_400(
    client: httpx.Client, platform: Platform, video_id: str, maxwidth: str
) -> None:
    response = oembed(client, f"{platform.url}/watch/{video_id}", maxwidth=maxwidth)
    assert response.status_code == 400
    assert "maxwidth must be a whole number of pixels" in response.json()["detail"]


def test_oembed_without_a_url_is_400(client: httpx.Client) -> None:
    response = client.get("/oembed")
    assert response.status_code == 400
    assert "give url" in response.json()["detail"]


# ---------------------------------------------------------------- pages and discovery


def test_the_watch_page_carries_the_oembed_discovery_link(
    client: httpx.Client, platform: Platform, video_id: str
) -> None:
    page = client.get(f"/watch/{video_id}")
    assert page.status_code == 200
    assert '<video id="video"' in page.text  # the page itself, opened on that video by its script
    href = discovery_href(page)
    watch = quote(f"{platform.url}/watch/{video_id}", safe="")
    assert href == f"{platform.url}/oembed?url={watch}&format=json"
    assert client.get(href).json()["type"] == "video"


def test_the_embed_page_carries_the_oembed_discovery_link(
    client: httpx.Client, platform: Platform, video_id: str
) -> None:
    page = client.get(f"/embed/{video_id}")
    assert page.status_code == 200
    href = discovery_href(page)
    assert quote(f"{platform.url}/embed/{video_id}", safe="") in href
    assert client.get(href).json()["title"]


def test_a_malformed_id_is_a_404_page_without_discovery(client: httpx.Client) -> None:
    for path in ("/watch/nope", "/embed/nope"):
        page = client.get(path)
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert not DISCOVERY.search(page.text)


# ---------------------------------------------------------------- who may frame what


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/watch/{id}",
        "/watch/nope",
        "/static/index.html",
        "/static/embed.html",  # the template, not the embed page
        "/static/app.js",
        "/vendor/hls.min.js",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/videos",
        "/videos/{id}",
        "/oembed?url=x",
        "/no/such/page",
        "/admin/videos",
    ],
)
def test_no_gateway_answer_but_the_embed_may_be_framed(
    client: httpx.Client, video_id: str, path: str
) -> None:
    response = client.get(path.format(id=video_id))
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers.get_list("content-security-policy")


@pytest.mark.parametrize("path", ["/embed/{id}", "/embed/{id}?autoplay=1&start=x", "/embed/nope"])
def test_the_embed_page_may_be_framed_by_any_site(
    client: httpx.Client, video_id: str, path: str
) -> None:
    response = client.get(path.format(id=video_id))
    assert "x-frame-options" not in response.headers
    assert response.headers.get_list("content-security-policy") == ["frame-ancestors *"]


# ---------------------------------------------------------------- private videos, PUBLIC_URL


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> Iterator[Platform]:
    """A platform with private playback, a public URL and one site allowed to frame its embed."""
    running = Platform(
        tmp_path_factory.mktemp("private") / "storage",
        PLAYBACK_SIGNING_KEY="k" * 32,
        PUBLIC_URL=PUBLIC_URL,
        EMBED_FRAME_ANCESTORS=CMS,
    ).start()
    yield running
    running.drop()


@pytest.fixture(scope="module")
def private_video(private: Platform, clips: dict[str, Path]) -> tuple[str, str]:
    """clips["tiny"] on the private platform, transcoded: (video id, playback token)."""
    with private.client() as api:
        uploaded, done = upload(api, clips["tiny"], chunk_size=MiB)
        assert done is not None and done.status_code == 200, done.text
        assert wait_status(api, uploaded)["overall"] == "ok"
        token = api.post(f"/admin/videos/{uploaded}/playback_token").json()["token"]
    return uploaded, str(token)


def test_oembed_of_a_private_video_needs_its_signed_link(
    private: Platform, private_video: tuple[str, str]
) -> None:
    video_id, token = private_video
    with private.client() as api:
        bare = oembed(api, f"{PUBLIC_URL}/watch/{video_id}")
        forged = oembed(api, f"{PUBLIC_URL}/watch/{video_id}?token=1900000000.{'0' * 64}")
        # An unknown id answers the same: a 401 tells nothing of what exists.
        unknown = oembed(api, f"{PUBLIC_URL}/watch/{UNKNOWN_ID}")
        signed = oembed(api, f"{PUBLIC_URL}/watch/{video_id}?token={token}", maxwidth="320")

    for refused in (bare, forged, unknown):
        assert refused.status_code == 401
        assert "signed link" in refused.json()["detail"]
        assert "title" not in refused.text
    assert signed.status_code == 200, signed.text
    assert signed.headers["cache-control"] == "private, no-store"
    body = signed.json()
    assert frame_attributes(body["html"])["src"] == f"{PUBLIC_URL}/embed/{video_id}?token={token}"
    assert body["thumbnail_url"] == f"{PUBLIC_URL}/stream/{video_id}/poster.jpg?token={token}"
    assert (body["width"], body["height"]) == (320, 240)


def test_with_public_url_only_its_addresses_are_this_site(
    private: Platform, private_video: tuple[str, str]
) -> None:
    video_id, token = private_video
    with private.client() as api:
        # The gateway's own address is not the public site's.
        local = oembed(api, f"{private.url}/watch/{video_id}?token={token}")
        page = api.get(f"/watch/{video_id}", params={"token": token})

    assert local.status_code == 404
    watch = quote(f"{PUBLIC_URL}/watch/{video_id}?token={token}", safe="")
    assert discovery_href(page) == f"{PUBLIC_URL}/oembed?url={watch}&format=json"


def test_embed_frame_ancestors_names_who_may_frame_the_embed(
    private: Platform, private_video: tuple[str, str]
) -> None:
    video_id, _ = private_video
    with private.client() as api:
        embed = api.get(f"/embed/{video_id}")
        page = api.get("/")
    assert embed.headers.get_list("content-security-policy") == [f"frame-ancestors {CMS}"]
    assert page.headers["x-frame-options"] == "DENY"
