"""RATE_CONTROL end to end: the same still clip (a slide: a counter ticking on a fixed
picture) through two platforms, one on the fixed ladder and one on capped CRF.

The setting reaches the workers and the ladder it makes is a valid one: capped CRF spends
what its CRF asks of the picture (far less here), every segment stays under its rung's
maxrate, and each master's peak stays within twice its average [HLS authoring 1.30].
Whether capped CRF keeps the fixed ladder's quality for fewer bytes is measured at the
production preset (tests/media/test_stitching.py, scripts/bench_rate_control.py); tests
encode with ultrafast, whose fixed ladder cannot even spend a still picture's budget, so
the capped platform here runs at CRF 30 to make the two ladders' spending tell apart.
"""

from pathlib import Path

import m3u8
import pytest

from services.core import layout
from services.media.ladder import plan_ladder
from tests.clips import make_clip
from tests.harness import Platform, upload, wait_status

WIDTH, HEIGHT, SECONDS = 854, 480, 6


@pytest.fixture(scope="module")
def still(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("still")
    path = folder / "slide.mp4"
    return make_clip(path, width=WIDTH, height=HEIGHT, seconds=SECONDS, pattern="testsrc")


def ladder(storage: Path, clip: Path, **env: str) -> dict[str, tuple[m3u8.M3U8, Path]]:
    """Each rung's media playlist and folder after `clip` is laddered by a platform with
    `env`, its master's peak checked against its average on the way."""
    platform = Platform(storage, **env).start()
    try:
        with platform.client() as client:
            video_id, done = upload(client, clip, chunk_size=1024 * 1024)
            assert done is not None and done.status_code == 200, done and done.text
            assert wait_status(client, video_id)["overall"] == "ok"
            master = m3u8.loads(client.get(f"/stream/{video_id}/master.m3u8").text)
            hls = platform.files(video_id) / layout.VideoLayout.of(video_id).hls
            rungs = {}
            for variant in master.playlists:
                name = variant.uri.split("/")[0]
                media = m3u8.loads(client.get(f"/stream/{video_id}/{variant.uri}").text)
                info = variant.stream_info
                assert info.average_bandwidth <= info.bandwidth <= 2 * info.average_bandwidth
                rungs[name] = (media, hls / name)
            return rungs
    finally:
        platform.drop()


def video_rate(media: m3u8.M3U8, folder: Path) -> list[float]:
    """Each segment's video bit rate, kb/s."""
    return [(folder / s.uri).stat().st_size * 8 / s.duration / 1000 for s in media.segments]


def test_the_rate_control_setting_reaches_the_ladder_and_keeps_it_valid(
    tmp_path: Path, still: Path
) -> None:
    fixed = ladder(tmp_path / "fixed", still, RATE_CONTROL="fixed")
    capped = ladder(tmp_path / "capped", still, RATE_CONTROL="capped-crf", LADDER_CRF="30")
    rungs = plan_ladder(WIDTH, HEIGHT)
    assert sorted(fixed) == sorted(capped) == sorted(r.name for r in rungs)
    for rung in rungs:
        spent = {
            name: video_rate(*ladders[rung.name])
            for name, ladders in [("fixed", fixed), ("capped", capped)]
        }
        fixed_mean = sum(spent["fixed"]) / len(spent["fixed"])
        capped_mean = sum(spent["capped"]) / len(spent["capped"])
        assert capped_mean <= 0.5 * fixed_mean, (rung.name, spent)
        assert max(spent["capped"]) <= rung.maxrate_kbps, (rung.name, spent)
