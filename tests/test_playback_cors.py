"""Playback from any origin, as a video CDN answers: every kind of playback file (playlists,
segments, init segments, pictures, downloads, the original) carries
`Access-Control-Allow-Origin: *` and no credentials, through the gateway and from the streaming
service (its fast path and its routes); a Range preflight is answered; the APIs still follow
CORS_ORIGINS. On the platform as it starts with the default settings."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.clips import make_clip
from tests.harness import Platform, wait_status
from tests.test_hevc import upload_with_codec

ELSEWHERE = "https://elsewhere.example"
EXPOSED = {"content-length", "content-range", "accept-ranges", "etag"}


@pytest.fixture(scope="module")
def videos(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny clip transcoded to an H.264 (MPEG-TS) ladder and to an HEVC (fMP4) one."""
    clip = make_clip(tmp_path_factory.mktemp("cors") / "c.mp4", width=320, height=240, seconds=3)
    made = {codec: upload_with_codec(client, clip, codec) for codec in ("h264", "hevc")}
    for video_id in made.values():
        assert wait_status(client, video_id)["overall"] == "ok"
    return made


def kinds(client: httpx.Client, videos: dict[str, str]) -> dict[str, str]:
    """Every kind of playback file -> its path, read from what the platform published."""
    h264, hevc = videos["h264"], videos["hevc"]
    rung = client.get(f"/stream/{h264}/qualities").json()["qualities"][0]
    fmp4_rung = client.get(f"/stream/{hevc}/qualities").json()["qualities"][0]
    return {
        "master": f"/stream/{h264}/master.m3u8",
        "rung playlist": f"/stream/{h264}/{rung}/playlist.m3u8",
        "I-frame playlist": f"/stream/{h264}/{rung}/iframes.m3u8",
        "audio playlist": f"/stream/{h264}/audio/playlist.m3u8",
        "TS segment": f"/stream/{h264}/{rung}/seg_00000.ts",
        "audio segment": f"/stream/{h264}/audio/seg_00000.ts",
        "init segment": f"/stream/{hevc}/{fmp4_rung}/init.mp4",
        "fMP4 segment": f"/stream/{hevc}/{fmp4_rung}/seg_00000.m4s",
        "poster": f"/stream/{h264}/poster.jpg",
        "storyboard map": f"/stream/{h264}/storyboard.vtt",
        "storyboard sprite": f"/stream/{h264}/storyboard.jpg",
        "download of the original": f"/stream/{h264}/download",
        "download of a rung": f"/stream/{h264}/download/{rung}.mp4",
        "original": f"/stream/{h264}/original",
        "qualities": f"/stream/{h264}/qualities",
    }


@pytest.fixture(params=["gateway", "streaming"])
def base(request: pytest.FixtureRequest, platform: Platform) -> Iterator[str]:
    """The gateway's URL, or the streaming service's."""
    yield platform.url if request.param == "gateway" else platform.service_url("streaming")


def assert_open_to_any_origin(response: httpx.Response, what: str) -> None:
    headers = response.headers
    assert headers.get("access-control-allow-origin") == "*", (what, dict(headers))
    assert "access-control-allow-credentials" not in headers, what
    exposed = {h.strip().lower() for h in headers["access-control-expose-headers"].split(",")}
    assert exposed >= EXPOSED, what


@pytest.mark.parametrize("origin", [ELSEWHERE, None])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_every_kind_of_playback_file_is_open_to_any_origin(
    client: httpx.Client, videos: dict[str, str], base: str, method: str, origin: str | None
) -> None:
    headers = {"Origin": origin} if origin else {}
    for kind, path in kinds(client, videos).items():
        if method == "HEAD" and kind == "qualities":
            continue  # JSON, not a file: GET only
        response = httpx.request(method, base + path, headers=headers, timeout=60)
        assert response.status_code == 200, (kind, response.status_code, response.text[:200])
        assert_open_to_any_origin(response, kind)


def test_a_byte_range_a_revalidation_and_an_error_are_open_too(
    client: httpx.Client, videos: dict[str, str], base: str
) -> None:
    found = kinds(client, videos)
    origin = {"Origin": ELSEWHERE}
    for kind in ("TS segment", "init segment", "original", "rung playlist"):
        part = httpx.get(base + found[kind], headers={**origin, "Range": "bytes=0-99"})
        assert part.status_code == 206, kind
        assert_open_to_any_origin(part, f"a range of the {kind}")
        tag = part.headers["etag"]
        again = httpx.get(base + found[kind], headers={**origin, "If-None-Match": tag})
        assert again.status_code == 304, kind
        assert_open_to_any_origin(again, f"a 304 of the {kind}")
    missing = httpx.get(base + found["TS segment"].replace("00000", "09999"), headers=origin)
    assert missing.status_code == 404
    assert_open_to_any_origin(missing, "a missing segment")


def test_a_range_preflight_is_answered_for_any_origin(
    client: httpx.Client, videos: dict[str, str], base: str
) -> None:
    for kind in ("master", "TS segment", "init segment", "original"):
        preflight = httpx.options(
            base + kinds(client, videos)[kind],
            headers={
                "Origin": ELSEWHERE,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "range",
            },
        )
        assert preflight.status_code in (200, 204), (kind, preflight.text)
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "range" in preflight.headers["access-control-allow-headers"].lower()
        assert "GET" in preflight.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in preflight.headers


@pytest.mark.parametrize(
    ("service", "path"),
    [("metadata", "/videos"), ("upload", "/upload/init"), ("admin", "/admin/status")],
)
def test_the_apis_still_refuse_other_origins(platform: Platform, service: str, path: str) -> None:
    own = f"http://127.0.0.1:{platform.ports['gateway']}"
    for base in (platform.url, platform.service_url(service)):
        refused = httpx.options(
            base + path,
            headers={"Origin": ELSEWHERE, "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        allowed = httpx.options(
            base + path, headers={"Origin": own, "Access-Control-Request-Method": "POST"}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == own
    plain = httpx.get(platform.url + "/videos", headers={"Origin": ELSEWHERE})
    assert "access-control-allow-origin" not in plain.headers


def test_listed_playback_origins_narrow_playback(tmp_path: Path, clips: dict[str, Path]) -> None:
    listed = "https://a.example"
    own = Platform(tmp_path / "storage", PLAYBACK_ORIGINS=listed).start()
    try:
        with own.client() as client:
            video_id = upload_with_codec(client, clips["tiny"], None)
            assert wait_status(client, video_id)["overall"] == "ok"
        for base in (own.url, own.service_url("streaming")):
            for path in ("master.m3u8", "poster.jpg"):
                url = f"{base}/stream/{video_id}/{path}"
                good = httpx.get(url, headers={"Origin": listed})
                bad = httpx.get(url, headers={"Origin": ELSEWHERE})
                assert good.headers["access-control-allow-origin"] == listed
                assert "access-control-allow-origin" not in bad.headers
                assert "origin" in good.headers["vary"].lower()
            preflight = httpx.options(
                f"{base}/stream/{video_id}/master.m3u8",
                headers={"Origin": ELSEWHERE, "Access-Control-Request-Method": "GET"},
            )
            assert preflight.status_code == 403
    finally:
        own.drop()
