"""The page in a real browser against the real platform: a resumable upload that survives a
reload, the player on every rung, the library's live progress and the operator's console.

Everything goes over HTTP: the browser drives the page, `client` checks what the API reports.
"""

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect

from tests.browser.conftest import DESKTOP, PHONE, open_page
from tests.harness import Platform, sha256_of, upload, wait_status

T = TypeVar("T")
MiB = 1024 * 1024
# The page's chunk requests: POST /upload/chunk?upload_id=…&index=… with the raw bytes.
CHUNK_URL = re.compile(r"/upload/chunk(\?|$)")
# A slow link, through Chromium's own throttling: the speed test then measures about 0.5 MiB/s,
# so the page picks its smallest chunk (4 MiB: 10 chunks for the 37 MiB clip), and 4 MiB/s up
# leaves time to reload while chunks are on their way.
SLOW_LINK = {
    "offline": False,
    "latency": 20,
    "downloadThroughput": 512 * 1024,
    "uploadThroughput": 4 * MiB,
}
RUNGS_OF_1080P = 4


def eventually(page: Page, check: Callable[[], T], *, what: str, timeout: float = 60) -> T:
    """Poll `check` until it returns something truthy. Waits inside the page, so that its
    events (and the route handlers counting requests) keep running meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        page.wait_for_timeout(200)
    raise AssertionError(f"not within {timeout} s: {what}")


def slow_down(page: Page, link: dict[str, Any]) -> None:
    """Throttle the page's network the way DevTools does (it holds across reloads)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", link)


def chunk_index(request: Request) -> int:
    """The `index` of a POST /upload/chunk, which the page sends as a raw body (the
    fields in the query string: no multipart for the server to parse)."""
    assert request.headers.get("content-type") == "application/octet-stream", request.headers
    assert not (request.post_data_buffer or b"").startswith(b"--"), "a multipart chunk"
    index = parse_qs(urlsplit(request.url).query).get("index")
    assert index, f"a chunk request without an index: {request.url}"
    return int(index[0])


def upload_state(client: httpx.Client, upload_id: str) -> dict[str, Any]:
    response = client.get(f"/upload/{upload_id}")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def job_status(client: httpx.Client, video_id: str) -> str:
    overall: str = client.get(f"/transcode/status/{video_id}").json()["overall"]
    return overall


def saved_upload_id(page: Page) -> str:
    """The upload id the page keeps in localStorage to resume after a reload ("" if none)."""
    upload_id: str = page.evaluate(
        """() => {
            const key = Object.keys(localStorage).find((k) => k.startsWith("upload:"));
            return key ? JSON.parse(localStorage.getItem(key)).uploadId : "";
        }"""
    )
    return upload_id


# ---------------------------------------------------------------- upload through the page


@dataclass
class PageUpload:
    """What happened while the page uploaded a file, with a reload in the middle."""

    upload_id: str
    chunk_size: int
    total_chunks: int
    on_server_at_reload: set[int]
    sent_before_reload: Counter[int]
    sent_after_reload: Counter[int]


@pytest.fixture(scope="module")
def page_upload(
    browser: Browser,
    platform: Platform,
    client: httpx.Client,
    clips: dict[str, Path],
    artifacts: Path,
) -> PageUpload:
    """clips["long"] uploaded through the page on a slow link, reloading the page once at
    least one chunk is on the server, then picking the same file again."""
    page = open_page(browser, platform, DESKTOP)
    sent: list[int] = []

    def count_chunk(route: Route, request: Request) -> None:
        sent.append(chunk_index(request))
        route.continue_()

    page.route(CHUNK_URL, count_chunk)
    slow_down(page, SLOW_LINK)
    page.goto("/")
    page.set_input_files("#file-input", clips["long"])

    upload_id = eventually(page, lambda: saved_upload_id(page), what="the upload to start")
    eventually(page, lambda: upload_state(client, upload_id)["received"], what="a first chunk")
    page.reload()
    sent_before, sent[:] = Counter(sent), []
    state = upload_state(client, upload_id)
    # After a reload the page says how to go on, and goes on once the file is picked again.
    expect(page.locator("#unfinished")).to_contain_text(clips["long"].name)
    page.set_input_files("#file-input", clips["long"])
    row = page.locator(".upload-item")
    expect(row.locator(".upload-detail")).to_contain_text("left", timeout=30_000)  # speed known
    page.screenshot(path=artifacts / "upload.png", full_page=True)
    expect(row).to_have_attribute("data-state", "done", timeout=90_000)
    expect(row).to_contain_text("100%")
    page.context.close()
    return PageUpload(
        upload_id=upload_id,
        chunk_size=state["chunk_size"],
        total_chunks=state["total_chunks"],
        on_server_at_reload=set(state["received"]),
        sent_before_reload=sent_before,
        sent_after_reload=Counter(sent),
    )


def test_upload_resumes_after_a_reload_without_resending_chunks(
    page_upload: PageUpload, platform: Platform, client: httpx.Client, clips: dict[str, Path]
) -> None:
    every_chunk = set(range(page_upload.total_chunks))
    resent = page_upload.on_server_at_reload & set(page_upload.sent_after_reload)

    assert page_upload.chunk_size == 4 * MiB, "the speed test of a slow link picks the floor"
    assert page_upload.total_chunks >= 3
    assert page_upload.on_server_at_reload, "the reload came before any chunk arrived"
    assert page_upload.on_server_at_reload != every_chunk, "the reload came after the last chunk"
    assert not resent, f"chunks the server had before the reload were sent again: {resent}"
    assert set(page_upload.sent_after_reload) == every_chunk - page_upload.on_server_at_reload
    assert set(page_upload.sent_after_reload.values()) == {1}, "a chunk was sent twice"
    assert upload_state(client, page_upload.upload_id)["completed"]
    source = platform.storage / "originals" / page_upload.upload_id / "source"
    assert sha256_of(source) == sha256_of(clips["long"])


def test_a_chunk_that_fails_is_sent_again(
    page: Page, client: httpx.Client, clips: dict[str, Path]
) -> None:
    attempts: list[int] = []

    def drop_the_first(route: Route, request: Request) -> None:
        attempts.append(chunk_index(request))
        if len(attempts) == 1:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route(CHUNK_URL, drop_the_first)
    page.goto("/")
    page.set_input_files("#file-input", clips["full"])
    row = page.locator(".upload-item")
    expect(row).to_have_attribute("data-state", "done", timeout=30_000)

    upload_id = row.get_attribute("data-upload-id")
    assert upload_id
    total = upload_state(client, upload_id)["total_chunks"]
    assert Counter(attempts) == {i: 2 if i == attempts[0] else 1 for i in range(total)}
    client.delete(f"/admin/videos/{upload_id}")  # no transcoding needed


def test_pause_stops_sending_and_resume_finishes_the_upload(
    page: Page, platform: Platform, client: httpx.Client, clips: dict[str, Path]
) -> None:
    sent: list[int] = []

    def count_chunk(route: Route, request: Request) -> None:
        sent.append(chunk_index(request))
        route.continue_()

    page.route(CHUNK_URL, count_chunk)
    slow_down(page, {**SLOW_LINK, "uploadThroughput": MiB})
    page.goto("/")
    page.set_input_files("#file-input", clips["full"])
    row = page.locator(".upload-item")
    expect(row).to_have_attribute("data-state", "uploading")
    row.get_by_role("button", name="Pause").click()
    expect(row).to_have_attribute("data-state", "paused")
    upload_id = row.get_attribute("data-upload-id")
    assert upload_id

    sent_while_uploading = len(sent)
    page.wait_for_timeout(1500)
    assert len(sent) == sent_while_uploading, "chunks were sent while paused"
    assert not upload_state(client, upload_id)["completed"]

    row.get_by_role("button", name="Resume").click()
    expect(row).to_have_attribute("data-state", "done", timeout=30_000)
    source = platform.storage / "originals" / upload_id / "source"
    assert sha256_of(source) == sha256_of(clips["full"])
    client.delete(f"/admin/videos/{upload_id}")  # no transcoding needed


# ---------------------------------------------------------------- the player


def start_playing(page: Page) -> None:
    page.evaluate(
        "() => { window.__player.video.muted = true; return window.__player.video.play(); }"
    )


def current_time(page: Page) -> float:
    seconds: float = page.evaluate("() => window.__player.video.currentTime")
    return seconds


def plays_on(page: Page, seconds: float) -> None:
    """Playback moves `seconds` past where it is now."""
    until = current_time(page) + seconds
    page.wait_for_function(f"() => window.__player.video.currentTime > {until}", timeout=20_000)


def test_uploaded_video_plays_on_the_lowest_and_highest_rung(
    page: Page, page_upload: PageUpload, client: httpx.Client, artifacts: Path
) -> None:
    video_id = page_upload.upload_id
    assert wait_status(client, video_id)["overall"] == "ok"

    page.goto(f"/#/watch/{video_id}")  # the shareable deep link, opened cold
    page.wait_for_function("() => window.__player && window.__player.hls.levels.length > 0")
    levels: list[int] = page.evaluate("() => window.__player.hls.levels.map((l) => l.height)")
    assert len(levels) == RUNGS_OF_1080P
    expect(page.locator("#quality option")).to_have_count(RUNGS_OF_1080P + 1)  # and Auto
    # The link to share is the clean one, whose HTML carries the oEmbed discovery link.
    expect(page.locator("#share-url")).to_have_value(
        re.compile(rf"^http://[^/#]+/watch/{video_id}$")
    )
    expect(page.locator("#download-original")).to_have_attribute(
        "href", f"/stream/{video_id}/original"
    )

    start_playing(page)
    page.wait_for_function("() => window.__player.video.currentTime > 3", timeout=30_000)
    page.screenshot(path=artifacts / "player.png", full_page=True)
    for level in (0, len(levels) - 1):  # hls.js orders levels by bitrate: lowest, highest
        page.select_option("#quality", str(level))
        page.wait_for_function(f"() => window.__player.switches.at(-1) === {level}")
        plays_on(page, 1)
        assert page.evaluate("() => window.__player.hls.currentLevel") == level
        expect(page.locator("#current-level")).to_have_text(f"Playing {levels[level]}p")


def test_player_shows_the_poster_and_storyboard_previews_on_the_seek_bar(
    page: Page, page_upload: PageUpload, client: httpx.Client, artifacts: Path
) -> None:
    video_id = page_upload.upload_id
    assert wait_status(client, video_id)["overall"] == "ok"
    page.goto(f"/#/watch/{video_id}")

    # Before playback the player shows the poster: a picture that has loaded, at 1280x720.
    poster = f"/stream/{video_id}/poster.jpg"
    expect(page.locator("#video")).to_have_attribute("poster", poster)
    size = page.evaluate(
        """async (url) => {
            const image = new Image();
            image.src = url;
            await image.decode();
            return [image.naturalWidth, image.naturalHeight];
        }""",
        poster,
    )
    assert size == [1280, 720]
    page.wait_for_function("() => window.__player && window.__player.storyboard.length > 0")
    assert page.evaluate("() => window.__player.video.paused")
    page.screenshot(path=artifacts / "player-poster.png", full_page=True)
    rungs = page.locator("#download-rungs a")
    expect(rungs).to_have_count(RUNGS_OF_1080P)
    expect(rungs.first).to_have_attribute("href", f"/stream/{video_id}/download/1080p.mp4")

    # Hovering the seek bar half-way shows the storyboard tile of the middle of the video.
    bar = page.locator("#seekbar")
    expect(bar).to_be_visible()
    box = bar.bounding_box()
    assert box is not None
    bar.hover(position={"x": box["width"] / 2, "y": box["height"] / 2})
    preview = page.locator("#seek-preview")
    expect(preview).to_be_visible()
    shown = page.evaluate(
        """() => {
            const time = Number(document.getElementById("seek-preview").dataset.time);
            const cue = window.__player.storyboard.filter((c) => c.start <= time).at(-1);
            const image = document.getElementById("seek-preview-image");
            return {
                time,
                duration: window.__player.video.duration,
                url: cue.url,
                background: image.style.backgroundImage,
                position: image.style.backgroundPosition,
                expected: `${-cue.x}px ${-cue.y}px`,
                size: [image.offsetWidth, image.offsetHeight],
            };
        }"""
    )
    assert shown["time"] == pytest.approx(shown["duration"] / 2, abs=0.5)
    assert shown["url"].endswith(f"/stream/{video_id}/storyboard.jpg")
    assert shown["url"] in shown["background"]
    assert shown["position"] == shown["expected"]
    assert shown["size"] == [160, 90]
    page.locator(".player").screenshot(path=artifacts / "player-preview.png")

    # A click on the bar seeks there; leaving it hides the preview.
    bar.click(position={"x": box["width"] / 4, "y": box["height"] / 2})
    quarter = page.evaluate("() => window.__player.video.duration / 4")
    assert current_time(page) == pytest.approx(quarter, abs=0.5)
    page.mouse.move(0, 0)
    expect(preview).to_be_hidden()


# ---------------------------------------------------------------- library and console


def upload_running(client: httpx.Client, clip: Path) -> str:
    """Upload `clip` through the API and return its id once its transcoding runs."""
    video_id, done = upload(client, clip, chunk_size=8 * MiB)
    assert done is not None
    assert done.status_code == 200, done.text
    wait_status(client, video_id, states=("running",))
    return video_id


def progress_of(page: Page, video_id: str) -> float:
    value: float = page.locator(f'.video-card[data-id="{video_id}"] progress').evaluate(
        "(bar) => bar.value"
    )
    return value


def test_library_shows_transcoding_progress_live(
    page: Page,
    browser: Browser,
    platform: Platform,
    client: httpx.Client,
    clips: dict[str, Path],
    artifacts: Path,
) -> None:
    video_id = upload_running(client, clips["long"])

    page.goto("/")
    card = page.locator(f'.video-card[data-id="{video_id}"]')
    expect(card).to_have_attribute("data-status", "running")
    expect(card.locator("progress")).to_be_visible()
    first = progress_of(page, video_id)
    # Without a reload, the bar moves on as the transcoding does.
    eventually(page, lambda: progress_of(page, video_id) > first, what="the progress to move")
    expect(card.get_by_role("heading")).to_have_text(clips["long"].name)
    page.screenshot(path=artifacts / "library.png", full_page=True)
    phone = open_page(browser, platform, PHONE)
    phone.goto("/")
    expect(phone.locator(f'.video-card[data-id="{video_id}"] .percent')).to_contain_text("%")
    phone.screenshot(path=artifacts / "library-phone.png", full_page=True)
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    phone.context.close()
    client.delete(f"/admin/videos/{video_id}")  # frees the worker for the next test


def sign_in(page: Page, token: str) -> None:
    """An operator who saved the admin token in this browser before."""
    page.goto("/")
    page.evaluate("(token) => localStorage.setItem('adminToken', token)", token)


def test_console_stops_resumes_and_deletes_a_video(
    page: Page, platform: Platform, client: httpx.Client, clips: dict[str, Path], artifacts: Path
) -> None:
    video_id = upload_running(client, clips["long"])
    sign_in(page, platform.admin_token)
    page.goto("/#/console")
    row = page.locator(f'#admin-videos tr[data-id="{video_id}"]')

    row.get_by_role("button", name="Stop").click()
    eventually(page, lambda: job_status(client, video_id) == "stopped", what="the job to stop")
    expect(row).to_have_attribute("data-status", "stopped")
    expect(page.locator("#services-table")).to_contain_text("transcoding")
    page.screenshot(path=artifacts / "console.png", full_page=True)

    row.get_by_role("button", name="Resume").click()
    eventually(
        page, lambda: job_status(client, video_id) != "stopped", what="the job to be resumed"
    )

    row.get_by_role("button", name="Delete").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(clips["long"].name)
    dialog.get_by_role("button", name="Delete").click()
    eventually(
        page,
        lambda: client.get(f"/videos/{video_id}").status_code == 404,
        what="the video to be deleted",
    )
    expect(row).to_have_count(0)


def test_console_asks_for_the_admin_token_and_sends_it(page: Page, platform: Platform) -> None:
    token = platform.admin_token
    page.goto("/#/console")

    # No token yet: the server's 401 opens a dialog that shows its detail and asks for one.
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Authorization: Bearer")
    dialog.get_by_label("Admin token").fill(token)
    with page.expect_request(
        lambda r: "/admin/" in r.url and r.headers.get("authorization") == f"Bearer {token}"
    ):
        dialog.get_by_role("button", name="Save token").click()

    expect(dialog).to_be_hidden()
    expect(page.locator("#services-table")).to_contain_text("transcoding")
    assert page.evaluate("() => localStorage.getItem('adminToken')") == token


def test_a_401_answered_after_the_token_is_saved_is_tried_again_not_asked_again(
    page: Page, platform: Platform
) -> None:
    """The console's calls go out every 2 s: one sent before the operator saves the token is
    refused for the token it carried (none). Answered after the save, it is sent again with
    the saved token; it neither opens the dialog again nor reports an error."""
    token = platform.admin_token
    held: list[Route] = []

    def hold_the_first_untokened(route: Route) -> None:
        if held or route.request.headers.get("authorization"):
            route.continue_()
        else:
            held.append(route)

    page.route("**/admin/videos", hold_the_first_untokened)
    page.goto("/#/console")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()  # /admin/status's 401
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert held, "the console never asked for /admin/videos"
    dialog.get_by_label("Admin token").fill(token)
    dialog.get_by_role("button", name="Save token").click()
    expect(dialog).to_be_hidden()

    # Now the held call reaches the server, without a token: 401. The next call for the
    # videos carrying the token comes after that 401 has been handled, whoever sends it.
    with page.expect_request(
        lambda r: "/admin/videos" in r.url and r.headers.get("authorization") == f"Bearer {token}"
    ):
        held[0].continue_()
    expect(dialog).to_be_hidden()
    expect(page.locator("#console-message")).not_to_contain_text("Could not load the videos")
    assert not dialog.evaluate("d => d.open")


def test_a_signed_link_plays_a_private_video(
    browser: Browser, clips: dict[str, Path], tmp_path: Path
) -> None:
    private = Platform(tmp_path / "storage", PLAYBACK_SIGNING_KEY="s" * 32).start()
    try:
        with private.client() as api:
            video_id, _ = upload(api, clips["small"], chunk_size=MiB)
            assert wait_status(api, video_id)["overall"] == "ok"
            token = api.post(f"/admin/videos/{video_id}/playback_token").json()["token"]
        page = open_page(browser, private, DESKTOP)
        try:
            page.goto(f"/#/watch/{video_id}?token={token}")
            page.wait_for_function("() => window.__player && window.__player.hls.levels.length")
            start_playing(page)
            page.wait_for_function("() => window.__player.video.currentTime > 1", timeout=30_000)
            expect(page.locator("#download-original")).to_have_attribute(
                "href", f"/stream/{video_id}/original?token={token}"
            )
            # The poster and the storyboard's tiles load with the token too.
            expect(page.locator("#video")).to_have_attribute(
                "poster", f"/stream/{video_id}/poster.jpg?token={token}"
            )
            page.wait_for_function("() => window.__player.storyboard.length > 0")
            assert page.evaluate("() => window.__player.storyboard[0].url").endswith(
                f"/stream/{video_id}/storyboard.jpg?token={token}"
            )
        finally:
            page.context.close()
    finally:
        private.drop()
