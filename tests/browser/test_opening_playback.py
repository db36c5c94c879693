"""The short opening segment through the whole platform, as production encodes it: the
ladder in a preset with B-frames (superfast here, veryfast in production) and the opening in
OPENING_X264_PRESET's ultrafast with its own options. The opening must be one short segment
on the same grid in every rung, in the profile the rung's CODECS declares, with decoding
times running on into the next chunk, and real players must play across it.
"""

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import m3u8
import pytest
from playwright.sync_api import Page

from services.core import layout
from services.media.playlists import read_media_playlist
from tests.browser.test_cross_origin import PLAYED_SECONDS, PLAYERS, play
from tests.clips import make_clip
from tests.harness import Platform, upload, wait_status
from tests.media.test_stitching import ffprobe

SEGMENT_SECONDS = 2
OPENING_SECONDS = 0.5


@pytest.fixture(scope="module")
def opening_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    running = Platform(
        tmp_path_factory.mktemp("opening") / "storage",
        X264_PRESET="superfast",
        SEGMENT_SECONDS=str(SEGMENT_SECONDS),
        OPENING_SECONDS=str(OPENING_SECONDS),
    ).start()
    yield running
    running.stop()
    running.drop()


@pytest.fixture(scope="module")
def video_id(opening_platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An 8 s 854x480 clip (two rungs) transcoded to `ok`."""
    clip = make_clip(
        tmp_path_factory.mktemp("clip") / "eight.mp4", width=854, height=480, seconds=8
    )
    with opening_platform.client() as client:
        video, done = upload(client, clip, chunk_size=256 * 1024)
        assert done is not None and done.status_code == 200, done.text
        assert wait_status(client, video)["overall"] == "ok"
    return video


@pytest.fixture(scope="module")
def hls(opening_platform: Platform, video_id: str) -> Path:
    return opening_platform.files(video_id) / "hls" / video_id


def rungs(hls: Path) -> list[str]:
    master = m3u8.load(str(hls / layout.MASTER))
    return [playlist.uri.split("/")[0] for playlist in master.playlists]


def test_every_rung_opens_with_one_short_segment_then_whole_ones(hls: Path) -> None:
    names = rungs(hls)
    assert len(names) == 2
    grids = []
    for rung in names:
        durations = [seconds for _, seconds in read_media_playlist(hls / rung / layout.PLAYLIST)]
        assert durations[0] == pytest.approx(OPENING_SECONDS, abs=0.04)
        assert durations[1:-1] == pytest.approx([SEGMENT_SECONDS] * (len(durations) - 2), abs=0.04)
        assert sum(durations) == pytest.approx(8.0, abs=0.04)
        grids.append(durations)
    assert grids[0] == grids[1]  # the same boundaries in every rung


def test_the_opening_is_in_the_profile_the_master_declares(hls: Path) -> None:
    master = m3u8.load(str(hls / layout.MASTER))
    for playlist in master.playlists:
        rung = playlist.uri.split("/")[0]
        segments = [uri for uri, _ in read_media_playlist(hls / rung / layout.PLAYLIST)]
        profiles = {
            ffprobe(hls / rung / uri, "-show_streams")["streams"][0]["profile"] for uri in segments
        }
        assert profiles == {"High"}, (rung, profiles)
        assert playlist.stream_info.codecs.startswith("avc1.64")


def test_decoding_times_rise_from_the_opening_into_the_next_chunk(
    hls: Path, tmp_path: Path
) -> None:
    for rung in rungs(hls):
        segments = [uri for uri, _ in read_media_playlist(hls / rung / layout.PLAYLIST)]
        joined = tmp_path / f"{rung}.ts"
        joined.write_bytes(b"".join((hls / rung / uri).read_bytes() for uri in segments[:3]))
        packets = ffprobe(joined, "-select_streams", "v:0", "-show_entries", "packet=dts")
        dts = [int(p["dts"]) for p in packets["packets"]]
        assert all(a < b for a, b in itertools.pairwise(dts)), rung


@pytest.mark.parametrize("player", PLAYERS)
def test_players_play_on_across_the_opening(
    foreign_page: Page, opening_platform: Platform, video_id: str, player: str
) -> None:
    src = f"{opening_platform.url}/stream/{video_id}/master.m3u8"
    played = play(foreign_page, player, src)
    print(f"{player}: played {played:.2f} s across the {OPENING_SECONDS} s opening")
    assert played >= PLAYED_SECONDS


def test_the_opening_is_served_before_the_rest_is_encoded(
    opening_platform: Platform, tmp_path: Path
) -> None:
    """A longer clip: the master and every rung's opening are served while later chunks are
    still pending (the opening is a unit of its own, published first)."""
    clip = make_clip(tmp_path / "twenty.mp4", width=854, height=480, seconds=20)
    with opening_platform.client() as client:
        video, done = upload(client, clip, chunk_size=256 * 1024)
        assert done is not None and done.status_code == 200, done.text
        seen_early = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = client.get(f"/transcode/status/{video}").json()
            master = client.get(f"/stream/{video}/master.m3u8")
            if master.status_code == 200 and status["overall"] != "ok":
                for rung in rungs_of(master.text):
                    playlist = client.get(f"/stream/{video}/{rung}/playlist.m3u8")
                    assert playlist.status_code == 200
                    first = next(ln for ln in playlist.text.splitlines() if ln.endswith(".ts"))
                    assert client.get(f"/stream/{video}/{rung}/{first}").status_code == 200
                seen_early = True
            if status["overall"] == "ok":
                break
            assert status["overall"] not in ("failed", "stopped"), status
            time.sleep(0.05)
        assert status["overall"] == "ok", status
        assert seen_early, "the master appeared only once the whole video was done"


def rungs_of(master: str) -> list[str]:
    return [ln.split("/")[0] for ln in master.splitlines() if ln.endswith("/playlist.m3u8")]
