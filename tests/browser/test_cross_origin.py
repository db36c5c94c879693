"""The platform used from another site: a page on another origin (a second local port) plays
a video with hls.js, Shaka Player and video.js (from the npm registry), through the gateway
and from the streaming service directly, and uploads with Uppy's Tus plugin to a direct
upload URL; all on a platform started with the default settings.
"""

import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from tests.clips import make_clip
from tests.harness import Platform, upload, wait_status

PLAYED_SECONDS = 4.0
PLAYERS = ("hls", "shaka", "videojs")
PATHS = ("gateway", "streaming")


@pytest.fixture(scope="module")
def video_id(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An 8 s clip transcoded to `ok`."""
    clip = make_clip(
        tmp_path_factory.mktemp("cross") / "eight.mp4", width=640, height=360, seconds=8
    )
    video, done = upload(client, clip, chunk_size=256 * 1024)
    assert done is not None and done.status_code == 200, done.text
    assert wait_status(client, video)["overall"] == "ok"
    return video


def play(page: Page, player: str, src: str) -> float:
    """Play `src` with `player` on the other origin's page; the seconds played (raises on a
    player error or when playback stalls)."""
    page.goto(f"/{player}.html")
    page.evaluate("(src) => window.start(src)", src)
    deadline = time.monotonic() + 60
    position = 0.0
    while time.monotonic() < deadline:
        failures = page.evaluate("window.failures")
        assert not failures, f"{player} failed on {src}: {failures}"
        position = page.evaluate("document.querySelector('video').currentTime")
        if position >= PLAYED_SECONDS:
            return float(position)
        page.wait_for_timeout(250)
    raise AssertionError(f"{player} played only {position:.2f} s of {src} in 60 s")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("player", PLAYERS)
def test_a_page_on_another_origin_plays_with_each_player(
    foreign_page: Page, platform: Platform, video_id: str, player: str, path: str
) -> None:
    base = platform.url if path == "gateway" else platform.service_url("streaming")
    src = f"{base}/stream/{video_id}/master.m3u8"
    played = play(foreign_page, player, src)
    print(f"{player} via the {path}: played {played:.2f} s")
    assert played >= PLAYED_SECONDS


def test_uppy_on_another_origin_uploads_to_a_direct_upload_url(
    foreign_page: Page, client: httpx.Client, clips: dict[str, Path], origin: str
) -> None:
    created = client.post(
        "/upload/direct",
        json={"cors_origin": origin, "max_size": 10 * 1024 * 1024, "name": "from-uppy.mp4"},
    )
    assert created.status_code == 201, created.text
    direct = created.json()
    foreign_page.goto("/uppy.html")
    foreign_page.wait_for_function("window.ready === true")
    data = list(clips["small"].read_bytes())
    foreign_page.evaluate(
        "([endpoint, bytes]) => window.upload(endpoint, 'small.mp4', new Uint8Array(bytes))",
        [direct["tus_url"], data],
    )
    foreign_page.wait_for_function("window.finished !== null || window.failures.length > 0")
    assert foreign_page.evaluate("window.failures") == []
    state = client.get(f"/upload/direct/{direct['id']}").json()
    assert state["status"] == "completed", state
    video = client.get(f"/videos/{state['video_id']}").json()
    assert video["filename"] == "from-uppy.mp4"
    assert wait_status(client, state["video_id"])["overall"] == "ok"
