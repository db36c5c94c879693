"""Captions in the page's player, in real Chromium: hls.js reads the master's SUBTITLES
renditions, the captions menu lists them (names as text, never HTML) and switches between
them, and the cues land in the <video>'s text tracks at the times that were uploaded (and,
for a track extracted from an MKV, the times it had in the file)."""

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.clips import make_clip, make_subtitled_clip, write_srt
from tests.harness import upload, wait_status

ENGLISH = [(0.5, 1.5, "One"), (2.5, 4.2, "Two"), (4.6, 5.5, "Three")]
PORTUGUESE = [(1.0, 2.0, "Um"), (3.0, 5.0, "Dois")]
HOSTILE_LABEL = "<img src=x onerror=window.__owned=1> & co"
# hls.js places cues through the timestamp map to 1/90000 s; anything past this is wrong.
TOLERANCE = 0.05

TEXT_TRACKS = """() => Array.from(window.__player.video.textTracks).map((t) => ({
    label: t.label,
    language: t.language,
    mode: t.mode,
    cues: t.cues ? Array.from(t.cues).map((c) => [c.startTime, c.endTime, c.text]) : [],
}))"""


def transcode(client: httpx.Client, clip: Path) -> str:
    video_id, done = upload(client, clip, chunk_size=256 * 1024)
    assert done is not None and done.status_code == 200, done.text
    assert wait_status(client, video_id)["overall"] == "ok"
    return video_id


def add_caption(client: httpx.Client, video_id: str, srt: Path, **fields: str) -> None:
    added = client.post(
        f"/videos/{video_id}/captions",
        data=fields,
        files={"file": (srt.name, srt.read_bytes(), "application/x-subrip")},
    )
    assert added.status_code == 201, added.text


@pytest.fixture(scope="module")
def captioned(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 6 s video with an English, a Portuguese and a hostile-labelled caption uploaded."""
    folder = tmp_path_factory.mktemp("captioned")
    video_id = transcode(client, make_clip(folder / "six.mp4", width=320, height=240, seconds=6))
    add_caption(client, video_id, write_srt(folder / "en.srt", ENGLISH), language="en")
    portuguese = write_srt(folder / "pt.srt", PORTUGUESE)
    add_caption(client, video_id, portuguese, language="pt-BR", label="Português")
    add_caption(client, video_id, portuguese, language="fr", label=HOSTILE_LABEL)
    return video_id


def open_watch(page: Page, video_id: str) -> None:
    page.goto(f"/#/watch/{video_id}")
    page.wait_for_function(
        "() => window.__player && window.__player.hls.subtitleTracks.length > 0",
        timeout=30_000,
    )


def choose(page: Page, label: str) -> None:
    page.select_option("#captions", label=label)


def showing(page: Page, timeout: float = 30_000, count: int = 1) -> dict[str, Any]:
    """The one text track shown, once it holds `count` cues."""
    page.wait_for_function(
        f"""() => Array.from(window.__player.video.textTracks).some(
            (t) => t.mode === "showing" && t.cues && t.cues.length >= {count})""",
        timeout=timeout,
    )
    shown = [t for t in page.evaluate(TEXT_TRACKS) if t["mode"] == "showing"]
    assert len(shown) == 1, shown
    track: dict[str, Any] = shown[0]
    return track


def assert_cues(track: dict[str, Any], expected: list[tuple[float, float, str]]) -> None:
    cues = sorted(track["cues"])
    print(f"cues in {track['label']!r}: {cues}")
    assert [text for _, _, text in cues] == [text for _, _, text in expected]
    for (start, end, _), (want_start, want_end, _) in zip(cues, expected, strict=True):
        assert abs(start - want_start) <= TOLERANCE and abs(end - want_end) <= TOLERANCE


def test_the_captions_menu_lists_the_tracks_and_switches_them(page: Page, captioned: str):
    open_watch(page, captioned)
    options = page.eval_on_selector_all("#captions option", "(os) => os.map((o) => o.textContent)")
    assert options == ["Off", "English", "Português", HOSTILE_LABEL]
    # The label is text in the menu: no element was made of it, no script ran.
    assert page.evaluate("() => document.querySelectorAll('#captions img').length") == 0
    assert page.evaluate("() => window.__owned") is None
    assert page.is_visible("#captions")
    page.evaluate(
        "() => { window.__player.video.muted = true; return window.__player.video.play(); }"
    )

    choose(page, "English")
    english = showing(page, count=len(ENGLISH))
    assert (english["label"], english["language"]) == ("English", "en")
    assert_cues(english, ENGLISH)

    choose(page, "Português")
    portuguese = showing(page, count=len(PORTUGUESE))
    assert (portuguese["label"], portuguese["language"]) == ("Português", "pt-BR")
    assert_cues(portuguese, PORTUGUESE)
    # The cue on screen is the one whose time it is: at 3.5 s, "Dois".
    page.evaluate(
        "() => { window.__player.video.pause(); window.__player.video.currentTime = 3.5; }"
    )
    page.wait_for_function(
        """() => Array.from(window.__player.video.textTracks).some((t) => t.mode === "showing"
            && t.activeCues && Array.from(t.activeCues).some((c) => c.text === "Dois"))""",
        timeout=15_000,
    )

    choose(page, "Off")
    page.wait_for_function(
        "() => Array.from(window.__player.video.textTracks).every((t) => t.mode !== 'showing')"
    )
    assert page.evaluate("() => window.__player.hls.subtitleTrack") == -1


def test_a_track_extracted_from_an_mkv_shows_at_its_times(
    page: Page, client: httpx.Client, tmp_path: Path
):
    srt = write_srt(tmp_path / "en.srt", ENGLISH)
    clip = make_subtitled_clip(
        tmp_path / "tracks.mkv", seconds=6, tracks=[(srt, "subrip", "eng", "From the file")]
    )
    video_id = transcode(client, clip)
    open_watch(page, video_id)
    page.evaluate(
        "() => { window.__player.video.muted = true; return window.__player.video.play(); }"
    )
    choose(page, "From the file")
    assert_cues(showing(page, count=len(ENGLISH)), ENGLISH)


def test_a_video_without_captions_shows_no_menu(page: Page, client: httpx.Client, tmp_path: Path):
    video_id = transcode(
        client, make_clip(tmp_path / "plain.mp4", width=320, height=240, seconds=2)
    )
    page.goto(f"/#/watch/{video_id}")
    page.wait_for_function("() => window.__player && window.__player.hls.levels.length > 0")
    assert page.evaluate("() => window.__player.hls.subtitleTracks.length") == 0
    assert not page.is_visible("#captions")


def test_the_embed_has_the_same_captions_menu_and_shows_the_cues(page: Page, captioned: str):
    # /embed/{id} runs the page's player module: its captions come with it.
    page.goto(f"/embed/{captioned}")
    page.wait_for_function(
        "() => window.__player && window.__player.hls.subtitleTracks.length > 0",
        timeout=30_000,
    )
    options = page.eval_on_selector_all("#captions option", "(os) => os.map((o) => o.textContent)")
    assert options == ["Off", "English", "Português", HOSTILE_LABEL]
    assert page.evaluate("() => window.__owned") is None
    page.evaluate(
        "() => { window.__player.video.muted = true; return window.__player.video.play(); }"
    )
    choose(page, "English")
    assert_cues(showing(page, count=len(ENGLISH)), ENGLISH)
