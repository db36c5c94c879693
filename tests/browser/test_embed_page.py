"""The embeddable player in real Chromium, inside an <iframe> on a page of another origin.

The host page is served by a small static server on a second port and opened as
http://localhost:PORT, while the embed comes from the gateway at http://127.0.0.1:PORT: another
origin and another site, as on a blog that embeds a video. This Chromium's autoplay policy is
the strict one a visitor may have: sound needs a click, muted autoplay does not.
"""

import functools
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Error,
    Frame,
    Page,
    Request,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE
from tests.clips import make_clip
from tests.harness import Platform, upload, wait_status

MiB = 1024 * 1024
UNKNOWN_ID = "0" * 31 + "a"
RUNGS_OF_720P = ["720p", "480p", "360p"]
PLAY_TIMEOUT_MS = 30_000
# A media segment of any rung, as the player fetches it.
SEGMENT_URL = re.compile(r"/seg_[0-9]{5}\.(ts|m4s)(\?|$)")
# A visitor's Chromium: instead of the tests' usual flag that lets any page autoplay with
# sound, the policy that refuses sound until a gesture, stated rather than left to the build's
# default, and with no media engagement bypass (an origin that has played enough with sound
# may autoplay with it, and this module's earlier tests play that origin). CI once saw the
# refusal test autoplay with sound; with document-user-activation-required it always does.
VISITOR_ARGS = [
    *(arg for arg in CHROMIUM_ARGS if not arg.startswith("--autoplay-policy")),
    "--autoplay-policy=user-gesture-required",
    "--disable-features=MediaEngagementBypassAutoplayPolicies,PreloadMediaEngagementData",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium that refuses to autoplay with sound."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        yield launched
        launched.close()


class QuietHandler(SimpleHTTPRequestHandler):
    """A static file server that does not print every request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class OtherSite:
    """A site on another origin (http://localhost:PORT) whose pages embed the player."""

    folder: Path
    url: str

    def page_with(self, name: str, body: str) -> str:
        """Write a page with `body` and return its URL."""
        (self.folder / f"{name}.html").write_text(
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{name}</title>'
            f'</head><body style="margin:0;background:#eee">{body}</body></html>',
            encoding="utf-8",
        )
        return f"{self.url}/{name}.html"


@pytest.fixture(scope="module")
def other_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtherSite]:
    """The static server on a second port, in a thread."""
    folder = tmp_path_factory.mktemp("other-site")
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield OtherSite(folder, f"http://localhost:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


@dataclass
class Videos:
    wide: str  # 1280x720, 8 s: three rungs
    short: str  # 320x240, 2 s: for looping


@pytest.fixture(scope="module")
def videos(
    client: httpx.Client, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Videos:
    clip = make_clip(
        tmp_path_factory.mktemp("embed") / "embed.mp4", width=1280, height=720, seconds=8
    )
    ids = []
    for path in (clip, clips["tiny"]):
        video_id, done = upload(client, path, chunk_size=MiB)
        assert done is not None and done.status_code == 200, done.text
        ids.append(video_id)
    for video_id in ids:
        assert wait_status(client, video_id)["overall"] == "ok"
    return Videos(*ids)


class Visitor:
    """Opens the other site's pages in fresh browser contexts; fails on uncaught page errors."""

    def __init__(self, browser: Browser, other_site: OtherSite, platform: Platform) -> None:
        self.browser, self.other_site, self.platform = browser, other_site, platform
        self.pages: list[Page] = []
        self.errors: list[Error] = []

    def open(
        self,
        body: str,
        *,
        viewport: ViewportSize = DESKTOP,
        on_request: Callable[[Request], None] | None = None,
    ) -> Page:
        """A page of the other site with `body` in it (`on_request` sees every request it
        and its frames make, from the first)."""
        page = self.browser.new_context(viewport=viewport).new_page()
        page.on("pageerror", lambda error: self.errors.append(error))
        if on_request is not None:
            page.on("request", on_request)
        self.pages.append(page)
        page.goto(self.other_site.page_with(f"host-{len(self.pages)}", body))
        return page

    def embed(
        self,
        path: str,
        *,
        viewport: ViewportSize = DESKTOP,
        size: tuple[int, int] = (640, 360),
        on_request: Callable[[Request], None] | None = None,
    ) -> Frame:
        """A page of the other site with the gateway's `path` (/embed/…) in an iframe; its frame."""
        page = self.open(
            iframe(self.platform.url + path, *size), viewport=viewport, on_request=on_request
        )
        handle = page.locator("#player").element_handle()
        assert handle is not None
        frame = handle.content_frame()
        assert frame is not None
        return frame

    def close(self) -> None:
        for page in self.pages:
            page.context.close()


@pytest.fixture
def visitor(browser: Browser, other_site: OtherSite, platform: Platform) -> Iterator[Visitor]:
    """A visitor of the other site; the test fails if a page (or its embed) throws."""
    opened = Visitor(browser, other_site, platform)
    yield opened
    opened.close()
    assert not opened.errors, f"uncaught errors in the page: {opened.errors}"


def iframe(src: str, width: int, height: int) -> str:
    """The embed snippet, as the README gives it."""
    return (
        f'<iframe id="player" src="{src}" width="{width}" height="{height}" frameborder="0" '
        'allow="autoplay; fullscreen; picture-in-picture" allowfullscreen></iframe>'
    )


def player_ready(frame: Frame) -> None:
    """hls.js has read the master playlist and the video element its metadata (Chromium's
    controls ignore a click on a video that has none yet, as a visitor's would be)."""
    frame.wait_for_function(
        "() => window.__player && window.__player.hls && window.__player.hls.levels.length > 0"
        " && window.__player.video.readyState >= 1",
        timeout=PLAY_TIMEOUT_MS,
    )


def plays_past(frame: Frame, seconds: float) -> float:
    """Wait until the video has played past `seconds`; how long that took (printed)."""
    began = time.monotonic()
    frame.wait_for_function(
        f"() => window.__player && window.__player.video.currentTime > {seconds}",
        timeout=PLAY_TIMEOUT_MS,
    )
    took = time.monotonic() - began
    print(f"played past {seconds} s in {took:.1f} s")
    return took


def player(frame: Frame, expression: str) -> Any:
    return frame.evaluate(f"() => window.__player.{expression}")


# ---------------------------------------------------------------- playback in the frame


def test_the_embed_plays_in_an_iframe_on_another_origin(
    visitor: Visitor, videos: Videos, artifacts: Path
) -> None:
    frame = visitor.embed(f"/embed/{videos.wide}")
    player_ready(frame)

    # The quality menu lists the rungs (and Auto), the poster shows before playback, the
    # storyboard is loaded for the seek bar; none of the site around the player is there.
    options = frame.locator("#quality option")
    expect(options).to_have_count(len(RUNGS_OF_720P) + 1)
    labels = options.all_text_contents()
    assert labels[0] == "Auto"
    assert sorted(label.split()[0] for label in labels[1:]) == sorted(RUNGS_OF_720P)
    expect(frame.locator("#video")).to_have_attribute("poster", f"/stream/{videos.wide}/poster.jpg")
    frame.wait_for_function("() => window.__player.storyboard.length > 0")
    assert frame.locator("header, nav, #upload, #library, #share-url, #view-console").count() == 0
    expect(frame.locator("#watch-link")).to_have_attribute("href", f"/watch/{videos.wide}")
    expect(frame.locator("#watch-title")).to_have_text("embed.mp4")
    assert player(frame, "video.paused")
    frame.page.screenshot(path=artifacts / "embed-poster.png")

    # A click on the picture plays it, with sound: a click is what the browser asks for.
    frame.locator("#video").click()
    plays_past(frame, 3)
    assert not player(frame, "video.muted")
    assert frame.evaluate("() => document.documentElement.classList.contains('playing')")

    # The seek bar previews the storyboard tile under the pointer.
    bar = frame.locator("#seekbar")
    box = bar.bounding_box()
    assert box is not None
    bar.hover(position={"x": box["width"] / 2, "y": box["height"] / 2})
    expect(frame.locator("#seek-preview")).to_be_visible()
    tile = frame.evaluate(
        "() => document.getElementById('seek-preview-image').style.backgroundImage"
    )
    assert f"/stream/{videos.wide}/storyboard.jpg" in tile
    frame.page.screenshot(path=artifacts / "embed-playing.png")

    # The menu switches rungs inside the frame as on the page.
    frame.locator("#quality").select_option("0")
    frame.wait_for_function("() => window.__player.switches.at(-1) === 0")


def test_the_embed_fills_a_small_frame_on_a_phone(
    visitor: Visitor, videos: Videos, artifacts: Path
) -> None:
    frame = visitor.embed(
        f"/embed/{videos.wide}?autoplay=1&muted=1", viewport=PHONE, size=(360, 203)
    )
    player_ready(frame)
    plays_past(frame, 1)
    sizes = frame.evaluate(
        """() => ({
            page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
            frame: [innerWidth, innerHeight],
            video: document.getElementById("video").getBoundingClientRect().toJSON(),
        })"""
    )
    # Nothing overflows the frame, and the picture takes most of it.
    assert sizes["page"] == sizes["frame"]
    assert sizes["video"]["width"] == sizes["frame"][0]
    assert sizes["video"]["height"] > 0.7 * sizes["frame"][1]
    frame.page.screenshot(path=artifacts / "embed-phone.png")


def test_autoplay_muted_plays_without_a_click(visitor: Visitor, videos: Videos) -> None:
    frame = visitor.embed(f"/embed/{videos.wide}?autoplay=1&muted=1")
    plays_past(frame, 2)
    assert player(frame, "video.muted")
    assert player(frame, "autoplayed") == "muted"


def test_autoplay_with_sound_that_the_browser_refuses_plays_muted(
    visitor: Visitor, videos: Videos
) -> None:
    # Nothing may touch the frame before the player has asked to play: Playwright evaluates
    # its scripts as a user gesture (CDP's userGesture), which would let the sound through.
    # A segment is fetched only after the manifest was parsed, where the player asks.
    segments: list[str] = []
    frame = visitor.embed(
        f"/embed/{videos.wide}?autoplay=1",
        on_request=lambda r: segments.append(r.url) if SEGMENT_URL.search(r.url) else None,
    )
    deadline = time.monotonic() + PLAY_TIMEOUT_MS / 1000
    while not segments and time.monotonic() < deadline:
        frame.page.wait_for_timeout(50)  # lets events in, evaluates nothing in the frame
    assert segments, "the player fetched no segment"
    plays_past(frame, 2)
    # Chromium lets no page start sound before a click: the player falls back to muted.
    assert player(frame, "autoplayed") == "muted-by-browser"
    assert player(frame, "video.muted")


def test_start_begins_playback_there(visitor: Visitor, videos: Videos) -> None:
    frame = visitor.embed(f"/embed/{videos.wide}?autoplay=1&muted=1&start=4")
    plays_past(frame, 4.5)
    # Nothing before 4 s was ever played: playback began at the start asked for.
    first_played = frame.evaluate("() => window.__player.video.played.start(0)")
    print(f"first played: {first_played:.2f} s")
    assert 3.9 <= first_played <= 4.5


def test_loop_plays_the_video_again_from_its_start(visitor: Visitor, videos: Videos) -> None:
    frame = visitor.embed(f"/embed/{videos.short}?autoplay=1&muted=1&loop=1")
    frame.wait_for_function("() => window.__player && window.__player.video")
    # Count the jumps back to the start as they happen.
    frame.evaluate(
        """() => {
            const video = window.__player.video;
            window.__wraps = 0;
            let last = 0;
            video.addEventListener("timeupdate", () => {
                if (video.currentTime < last - 0.5) window.__wraps += 1;
                last = video.currentTime;
            });
        }"""
    )
    began = time.monotonic()
    frame.wait_for_function("() => window.__wraps >= 2", timeout=PLAY_TIMEOUT_MS)
    print(f"two loops of a 2 s clip in {time.monotonic() - began:.1f} s")
    assert player(frame, "video.loop")
    assert not player(frame, "video.ended")
    assert not player(frame, "video.paused")


# ---------------------------------------------------------------- what goes wrong, in the frame


def test_bad_options_are_ignored_and_named_in_the_frame(
    visitor: Visitor, videos: Videos, artifacts: Path
) -> None:
    frame = visitor.embed(f"/embed/{videos.wide}?autoplay=yes&start=1:30&muted=1&loop=2")
    player_ready(frame)
    messages = frame.locator("#embed-message-list li")
    expect(messages).to_have_text(
        [
            "autoplay=yes is ignored: use autoplay=1 (on) or autoplay=0 (off).",
            "loop=2 is ignored: use loop=1 (on) or loop=0 (off).",
            "start=1:30 is ignored: give the start in seconds, e.g. start=30.",
        ]
    )
    frame.page.screenshot(path=artifacts / "embed-bad-options.png")
    # The valid one holds, the rest is ignored: muted, not playing by itself, from 0.
    assert player(frame, "video.muted")
    assert player(frame, "video.paused")
    frame.locator("#embed-dismiss").click()
    expect(frame.locator("#embed-messages")).to_be_hidden()
    frame.locator("#video").click()
    plays_past(frame, 1)
    assert frame.evaluate("() => window.__player.video.played.start(0)") < 0.5


def test_a_start_past_the_end_plays_from_the_beginning_and_says_so(
    visitor: Visitor, videos: Videos
) -> None:
    frame = visitor.embed(f"/embed/{videos.wide}?autoplay=1&muted=1&start=99")
    plays_past(frame, 1)
    expect(frame.locator("#embed-message-list li")).to_have_text(
        ["start=99 is past the end of this video (0:08 long): it plays from the beginning."]
    )
    assert frame.evaluate("() => window.__player.video.played.start(0)") < 0.5


def test_an_unknown_video_shows_a_message_in_the_frame(visitor: Visitor, artifacts: Path) -> None:
    frame = visitor.embed(f"/embed/{UNKNOWN_ID}?autoplay=1")
    expect(frame.locator("#watch-title")).to_have_text("Video not available")
    expect(frame.locator("#embed-message-list li")).to_have_text([f"no video {UNKNOWN_ID}"])
    # No controls that would do nothing, no link to a watch page of nothing.
    expect(frame.locator(".embed-bar")).to_be_hidden()
    assert not frame.evaluate("() => document.getElementById('video').controls")
    assert frame.locator("#watch-link").get_attribute("href") is None
    frame.page.screenshot(path=artifacts / "embed-unknown.png")


def test_a_malformed_id_shows_a_message_in_the_frame(visitor: Visitor) -> None:
    frame = visitor.embed("/embed/not-a-video")
    expect(frame.locator("#watch-title")).to_have_text("Video not available")
    expect(frame.locator("#embed-message-list li")).to_contain_text(["is not a video id"])


# ---------------------------------------------------------------- who may frame what


def test_chromium_frames_the_embed_but_refuses_every_other_page(
    visitor: Visitor, platform: Platform, videos: Videos, artifacts: Path
) -> None:
    refused = ["/", f"/watch/{videos.wide}", "/#/console", "/docs"]
    frames = [
        iframe(platform.url + path, 300, 170).replace('id="player"', f'id="f{i}"')
        for i, path in enumerate(refused)
    ]
    body = iframe(f"{platform.url}/embed/{videos.wide}", 300, 170) + "".join(frames)
    console: list[str] = []
    page = visitor.browser.new_context(viewport=DESKTOP).new_page()
    visitor.pages.append(page)
    page.on("console", lambda message: console.append(message.text))
    page.goto(visitor.other_site.page_with("framing", body))

    embed = page.locator("#player").element_handle().content_frame()  # type: ignore[union-attr]
    assert embed is not None
    player_ready(embed)
    for i, path in enumerate(refused):
        handle = page.locator(f"#f{i}").element_handle()
        assert handle is not None
        blocked = handle.content_frame()
        assert blocked is not None
        # Chromium shows its error page instead: nothing of the gateway's page is in the frame.
        expect_url = "chrome-error://chromewebdata/"
        deadline = time.monotonic() + 10
        while blocked.url != expect_url and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert blocked.url == expect_url, (path, blocked.url)
    refusals = [text for text in console if "frame-ancestors 'none'" in text]
    assert len(refusals) == len(refused), console
    page.screenshot(path=artifacts / "embed-framing.png")


# ---------------------------------------------------------------- the watch page and its snippet


def test_the_watch_page_gives_a_clean_link_and_an_embed_code_that_plays_elsewhere(
    visitor: Visitor, platform: Platform, videos: Videos, artifacts: Path
) -> None:
    page = visitor.browser.new_context(base_url=platform.url, viewport=DESKTOP).new_page()
    visitor.pages.append(page)
    page.on("pageerror", lambda error: visitor.errors.append(error))
    page.goto(f"/watch/{videos.wide}")  # the page itself, opened on one video by its path
    player_ready(page.main_frame)
    expect(page.locator("#watch-title")).to_have_text("embed.mp4")
    expect(page.locator("#share-url")).to_have_value(f"{platform.url}/watch/{videos.wide}")
    snippet = page.locator("#embed-code").input_value()
    assert snippet == (
        f'<iframe src="{platform.url}/embed/{videos.wide}" width="640" height="360" '
        'title="embed.mp4" frameborder="0" allow="autoplay; fullscreen; picture-in-picture" '
        'allowfullscreen=""></iframe>'
    )
    page.screenshot(path=artifacts / "watch-page.png", full_page=True)
    page.get_by_role("link", name="Library").click()
    expect(page).to_have_url(f"{platform.url}/#/")
    expect(page.locator("#library")).to_be_visible()

    # The snippet, pasted into the other site's page as it is, plays there.
    host = visitor.open(snippet.replace("<iframe ", '<iframe id="player" '))
    frame = host.locator("#player").element_handle().content_frame()  # type: ignore[union-attr]
    assert frame is not None
    player_ready(frame)
    frame.locator("#video").click()
    plays_past(frame, 2)


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> Iterator[Any]:
    """A platform with private playback and a video on it: (platform, video id, token)."""
    running = Platform(
        tmp_path_factory.mktemp("private-embed") / "storage", PLAYBACK_SIGNING_KEY="e" * 32
    ).start()
    try:
        with running.client() as api:
            video_id, done = upload(api, clips["small"], chunk_size=MiB)
            assert done is not None and done.status_code == 200, done.text
            assert wait_status(api, video_id)["overall"] == "ok"
            token = api.post(f"/admin/videos/{video_id}/playback_token").json()["token"]
        yield running, video_id, token
    finally:
        running.drop()


def test_a_signed_embed_plays_a_private_video_with_its_token_on_every_request(
    browser: Browser, other_site: OtherSite, private: Any
) -> None:
    platform, video_id, token = private
    visitor = Visitor(browser, other_site, platform)
    streamed: list[str] = []
    try:
        # Listening from the start: a small clip may be fully loaded before embed() returns.
        frame = visitor.embed(
            f"/embed/{video_id}?token={token}&autoplay=1&muted=1",
            on_request=lambda r: streamed.append(r.url) if "/stream/" in r.url else None,
        )
        plays_past(frame, 1)
        frame.wait_for_function("() => window.__player.storyboard.length > 0")
        expect(frame.locator("#video")).to_have_attribute(
            "poster", f"/stream/{video_id}/poster.jpg?token={token}"
        )
        assert frame.evaluate("() => window.__player.storyboard[0].url").endswith(
            f"/stream/{video_id}/storyboard.jpg?token={token}"
        )
        expect(frame.locator("#watch-link")).to_have_attribute(
            "href", f"/watch/{video_id}?token={token}"
        )
        assert streamed, "no playback request seen"
        assert all(url.endswith(f"?token={token}") for url in streamed), streamed

        # Without the token, the frame says why it does not play.
        bare = visitor.embed(f"/embed/{video_id}")
        expect(bare.locator("#embed-message-list li").first).to_contain_text("is private")

        # The title's link, the watch page, plays it too, and shares it signed.
        page = browser.new_context(base_url=platform.url, viewport=DESKTOP).new_page()
        visitor.pages.append(page)
        page.goto(f"/watch/{video_id}?token={token}")
        player_ready(page.main_frame)
        expect(page.locator("#share-url")).to_have_value(
            f"{platform.url}/watch/{video_id}?token={token}"
        )
        assert f'src="{platform.url}/embed/{video_id}?token={token}"' in (
            page.locator("#embed-code").input_value()
        )
        page.evaluate("() => { window.__player.video.muted = true; window.__player.video.play(); }")
        plays_past(page.main_frame, 1)
    finally:
        visitor.close()
    assert not visitor.errors, visitor.errors
