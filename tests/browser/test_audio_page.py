"""An audio-only video on the page, in a real Chromium: hls.js plays its audio-only master in
an audio player (no picture area, no quality menu), and the library shows a note for it."""

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.clips import make_audio_clip
from tests.harness import upload, wait_status

# The note is drawn in the page's accent colour, blue in the light scheme (style.css --accent,
# #1f5fd1), on a card at 70 % opacity: a pixel of it is far bluer than red, which no grey of
# the page or of the browser's controls is.
NOTE_BLUE_OVER_RED = 80
# An audio player is a bar of controls, not a 16:9 picture: at 1280 px wide a picture area
# would be about 700 px tall.
MAX_PLAYER_HEIGHT = 160


@pytest.fixture(scope="module")
def episode(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 12 s AAC episode, uploaded and transcoded: its video id."""
    folder = tmp_path_factory.mktemp("audio-page")
    clip = make_audio_clip(folder / "episode.m4a", seconds=12, encoder=["-c:a", "aac"])
    video_id, done = upload(client, clip, chunk_size=256 * 1024)
    assert done is not None and done.status_code == 200, done.text
    assert wait_status(client, video_id)["overall"] == "ok"
    return video_id


def colours(page: Page, png: bytes) -> dict[str, Any]:
    """How many pixels of a screenshot are near black and of the note's blue, counted by the
    page itself (it decodes PNG; this test has no image library)."""
    counted: dict[str, Any] = page.evaluate(
        """async ([data, blueOverRed]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
            const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
            const context = canvas.getContext("2d");
            context.drawImage(bitmap, 0, 0);
            const pixels = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
            let black = 0, note = 0;
            for (let i = 0; i < pixels.length; i += 4) {
                const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
                if (r < 16 && g < 16 && b < 16) black += 1;
                if (b - r > blueOverRed) note += 1;
            }
            return { total: pixels.length / 4, black, note, height: bitmap.height };
        }""",
        [base64.b64encode(png).decode(), NOTE_BLUE_OVER_RED],
    )
    return counted


def test_an_audio_only_video_plays_in_an_audio_player(
    page: Page, episode: str, artifacts: Path
) -> None:
    page.emulate_media(color_scheme="light")
    page.goto(f"/#/watch/{episode}")
    page.wait_for_function("() => window.__player && window.__player.hls.levels.length > 0")
    levels = page.evaluate(
        "() => window.__player.hls.levels.map((l) => [l.height, l.videoCodec || '', l.audioCodec])"
    )
    assert levels == [[0, "", "mp4a.40.2"]], "one level, audio only"
    assert page.evaluate("() => window.__player.video.tagName") == "AUDIO"
    expect(page.locator("#audio-player")).to_be_visible()
    expect(page.locator("#video")).to_be_hidden()
    expect(page.locator("#player-controls")).to_be_hidden()  # no quality menu
    expect(page.locator("#watch-meta")).to_contain_text("Audio only")
    expect(page.locator("#download-rungs a")).to_have_attribute(
        "href", f"/stream/{episode}/download/audio.m4a"
    )

    page.evaluate(
        "() => { window.__player.video.muted = true; return window.__player.video.play(); }"
    )
    page.wait_for_function("() => window.__player.video.currentTime > 3", timeout=30_000)
    played = page.evaluate("() => window.__player.video.currentTime")
    print(f"audio-only playback reached {played:.2f} s")
    assert page.evaluate("() => window.__player.video.error") is None
    expect(page.locator("#error")).to_be_hidden()

    page.screenshot(path=artifacts / "player-audio.png", full_page=True)
    shot = page.locator(".player").screenshot(path=artifacts / "player-audio-bar.png")
    counted = colours(page, shot)
    print(f"audio player screenshot: {counted}")
    # What shows is a bar with the note, not a black picture area.
    assert counted["height"] <= MAX_PLAYER_HEIGHT
    assert counted["black"] < 0.02 * counted["total"]
    assert counted["note"] > 50, "the note is drawn"


def test_the_library_shows_a_note_for_an_audio_only_video(
    page: Page, episode: str, artifacts: Path
) -> None:
    page.emulate_media(color_scheme="light")
    page.goto("/")
    card = page.locator(f'.video-card[data-id="{episode}"]')
    expect(card).to_have_attribute("data-status", "ok")
    thumb = card.locator(".thumb")
    expect(thumb).to_have_class("thumb audio")
    expect(thumb.locator("img")).to_have_count(0)  # no poster is asked for
    counted = colours(page, thumb.screenshot(path=artifacts / "library-audio-card.png"))
    print(f"library card screenshot: {counted}")
    assert counted["note"] > 50, "the note is drawn where a poster would be"
