"""The page offers the HEVC ladder only where the browser can play it, and says so plainly
when it is handed an HEVC video it cannot play.

This machine's headless Chromium has no H.265 decoder, so its real answer is "hidden"; the
other answer is produced by making Media Source claim support (what a browser with a
hardware decoder answers), never by faking the platform.
"""

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect

from tests.browser.conftest import DESKTOP, open_page
from tests.clips import make_clip
from tests.harness import Platform, wait_status
from tests.test_hevc import upload_with_codec

HEVC_PROBE = 'video/mp4; codecs="hvc1.1.6.L120.90"'


def claim_hevc(page: Page, *, supported: bool) -> None:
    """Make Media Source answer `supported` for every hvc1 type (before the page loads)."""
    answer = "true" if supported else "false"
    page.add_init_script(
        "(() => {"
        " const real = MediaSource.isTypeSupported.bind(MediaSource);"
        f" MediaSource.isTypeSupported = (type) => (type.includes('hvc1') ? {answer} : real(type));"
        " })();"
    )


@pytest.fixture(scope="module")
def hevc_video(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("hevc-page")
    clip = make_clip(folder / "small.mp4", width=320, height=180, seconds=2)
    video_id = upload_with_codec(client, clip, "hevc")
    assert wait_status(client, video_id)["overall"] == "ok"
    return video_id


def test_the_codec_choice_follows_this_browsers_real_hevc_support(page: Page) -> None:
    page.goto("/")
    expect(page.locator("#drop-zone")).to_be_visible()
    playable = page.evaluate(f"() => MediaSource.isTypeSupported('{HEVC_PROBE}')")
    expect(page.locator("#codec-choice")).to_have_count(1 if playable else 0)


def test_the_codec_choice_is_hidden_where_hevc_cannot_play(page: Page) -> None:
    claim_hevc(page, supported=False)
    page.goto("/")
    expect(page.locator("#drop-zone")).to_be_visible()
    expect(page.locator("#codec-choice")).to_have_count(0)


def test_where_hevc_plays_the_upload_can_ask_for_it(
    page: Page, tmp_path: Path, artifacts: Path
) -> None:
    claim_hevc(page, supported=True)
    sent: list[bytes] = []

    def refuse_init(route: Route, request: Request) -> None:
        sent.append(request.post_data_buffer or b"")
        route.fulfill(status=503, json={"error": "unavailable", "detail": "not in this test"})

    page.route("**/upload/init", refuse_init)
    page.goto("/")
    expect(page.locator("#codec-choice")).to_be_visible()
    expect(page.locator("#codec option")).to_have_count(3)
    page.select_option("#codec", "hevc")
    page.locator("#upload").screenshot(path=artifacts / "upload-codec-choice.png")
    clip = make_clip(tmp_path / "clip.mp4", width=160, height=90, seconds=1)
    page.set_input_files("#file-input", str(clip))
    for _ in range(150):  # the page hashes the file first, then declares the upload
        if sent:
            break
        page.wait_for_timeout(200)
    assert sent, "the page declared the upload"
    assert b'name="codec"\r\n\r\nhevc\r\n' in sent[0]


def test_an_hevc_video_in_a_browser_without_hevc_says_why_it_does_not_play(
    browser: Browser, platform: Platform, hevc_video: str
) -> None:
    page = open_page(browser, platform, DESKTOP)
    try:
        claim_hevc(page, supported=False)
        page.goto(f"/#/watch/{hevc_video}")
        expect(page.locator("#error-text")).to_contain_text("HEVC (H.265)", timeout=30_000)
        expect(page.locator("#error-text")).to_contain_text("download the original")
        expect(page.locator("#download-original")).to_have_attribute(
            "href", f"/stream/{hevc_video}/original"
        )
    finally:
        page.context.close()
