"""Poster, storyboard and downloads through the real platform: what the streaming service
serves is measured with ffprobe and compared byte for byte with what was uploaded."""

import hashlib
import itertools
import json
import re
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.harness import Platform, sha256_of, unknown_video_id, upload, wait_status
from tests.media.test_thumbnails import cues

# What the top rung of each test clip is, and so the poster's size (long side <= 1280).
POSTER_SIZES = {
    "full": (1280, 720),
    "portrait": (720, 1280),
    "small": (640, 360),
    "silent": (1280, 720),
    "pal": (1280, 720),
    "tiny": (320, 240),
}
# The lowest rung fitted into 160 px: one storyboard tile.
TILE_SIZES = {
    "full": (160, 90),
    "portrait": (90, 160),
    "small": (160, 90),
    "silent": (160, 90),
    "pal": (160, 90),
    "tiny": (160, 120),
}
XYWH = re.compile(r"#xywh=(\d+),(\d+),(\d+),(\d+)$")
# testsrc2 is bright everywhere: a tile darker than this was never filled.
BLANK_LUMA = 16


def probe(data: bytes, folder: Path, name: str) -> dict[str, Any]:
    """ffprobe's report of `data` (saved as `folder/name`)."""
    path = folder / name
    path.write_bytes(data)
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def top_level_boxes(data: bytes) -> list[str]:
    """The types of an MP4's top-level boxes, in file order."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        assert size >= 8, f"a broken box at {offset}"
        boxes.append(kind.decode("latin-1"))
        offset += size
    return boxes


def tile_luma(sprite: Path, x: int, y: int, w: int, h: int) -> float:
    """The mean brightness (0-255) of one tile of a sprite."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(sprite),
            "-vf",
            f"crop={w}:{h}:{x}:{y},format=gray",
            "-f",
            "rawvideo",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert len(raw) == w * h
    return sum(raw) / len(raw)


def get_ok(client: httpx.Client, url: str) -> httpx.Response:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return response


def wait_playable(client: httpx.Client, video_id: str, timeout: float = 180) -> dict[str, Any]:
    """Poll the transcoding status until the video plays (or is finished); return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/transcode/status/{video_id}").json()
        if status.get("playable") or status.get("overall") in ("ok", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"{video_id} not playable after {timeout} s")


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    detail: str = body["detail"]
    return detail


# ---------------------------------------------------------------- poster


@pytest.mark.parametrize("clip", sorted(POSTER_SIZES))
def test_poster_is_a_jpeg_at_the_top_rungs_size(client, transcoded, clip, tmp_path):
    response = get_ok(client, f"/stream/{transcoded[clip]}/poster.jpg")
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content[:3] == b"\xff\xd8\xff"
    assert "etag" in response.headers
    stream = probe(response.content, tmp_path, "poster.jpg")["streams"][0]
    assert stream["codec_name"] == "mjpeg"
    assert (stream["width"], stream["height"]) == POSTER_SIZES[clip]
    again = client.get(
        f"/stream/{transcoded[clip]}/poster.jpg",
        headers={"If-None-Match": response.headers["etag"]},
    )
    assert again.status_code == 304


def test_poster_comes_with_the_first_chunk_and_the_rest_once_ok(client, clips, tmp_path):
    video_id, done = upload(client, clips["long"], chunk_size=8 * 1024 * 1024)
    assert done is not None and done.status_code == 200, done.text
    try:
        status = wait_playable(client, video_id)
        assert status["playable"], status
        poster = get_ok(client, f"/stream/{video_id}/poster.jpg")
        stream = probe(poster.content, tmp_path, "poster.jpg")["streams"][0]
        assert (stream["width"], stream["height"]) == (1280, 720)

        # Stopped part-way: the original downloads, a rung does not, and the reason says so.
        assert client.post(f"/admin/videos/{video_id}/stop").status_code == 200
        assert wait_status(client, video_id, {"stopped", "ok"})["overall"] == "stopped"
        rung = client.get(f"/stream/{video_id}/download/720p.mp4")
        assert rung.status_code == 409
        assert "is stopped" in error_of(rung) and "status ok" in error_of(rung)
        storyboard = client.get(f"/stream/{video_id}/storyboard.vtt")
        assert storyboard.status_code == 404
        assert "once transcoding is finished" in error_of(storyboard)
        original = get_ok(client, f"/stream/{video_id}/download")
        assert hashlib.sha256(original.content).hexdigest() == sha256_of(clips["long"])
    finally:
        client.delete(f"/admin/videos/{video_id}")  # frees the worker for the other tests


def test_an_upload_not_complete_has_no_files_yet(client, clips):
    video_id, _ = upload(client, clips["tiny"], chunk_size=1024 * 1024, complete=False)
    for path in ("download/240p.mp4", "download", "poster.jpg", "storyboard.jpg"):
        response = client.get(f"/stream/{video_id}/{path}")
        assert response.status_code == 404, path
        assert f"no video {video_id}" in error_of(response)
    client.delete(f"/admin/videos/{video_id}")


# ---------------------------------------------------------------- storyboard


@pytest.mark.parametrize("clip", sorted(TILE_SIZES))
def test_storyboard_map_covers_the_video_with_tiles_of_its_sprite(
    client, transcoded, clip, tmp_path
):
    video_id = transcoded[clip]
    duration = client.get(f"/videos/{video_id}").json()["duration"]
    vtt_url = f"/stream/{video_id}/storyboard.vtt"
    vtt = get_ok(client, vtt_url)
    assert vtt.headers["content-type"].startswith("text/vtt")
    found = cues(vtt.text)
    assert found[0][0] == 0.0
    assert found[-1][1] == pytest.approx(duration, abs=0.002)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(found)), found

    tiles = []
    for _, _, uri in found:
        assert urljoin(vtt_url, uri.split("#")[0]) == f"/stream/{video_id}/storyboard.jpg"
        match = XYWH.search(uri)
        assert match, uri
        tiles.append(tuple(int(v) for v in match.groups()))
    assert {(w, h) for _, _, w, h in tiles} == {TILE_SIZES[clip]}
    assert len(set(tiles)) == len(tiles)

    sprite = get_ok(client, f"/stream/{video_id}/storyboard.jpg")
    assert sprite.headers["content-type"] == "image/jpeg"
    stream = probe(sprite.content, tmp_path, "storyboard.jpg")["streams"][0]
    tile_w, tile_h = TILE_SIZES[clip]
    columns = len({x for x, _, _, _ in tiles})
    rows = len({y for _, y, _, _ in tiles})
    assert (stream["width"], stream["height"]) == (columns * tile_w, rows * tile_h)
    # Every tile the map names was filled with a frame (none left blank by the grid).
    for tile in tiles:
        assert tile_luma(tmp_path / "storyboard.jpg", *tile) > BLANK_LUMA, tile


# ---------------------------------------------------------------- downloads


def test_original_download_is_byte_identical_and_named(client, transcoded, clips):
    video_id = transcoded["full"]
    response = get_ok(client, f"/stream/{video_id}/download")
    assert hashlib.sha256(response.content).hexdigest() == sha256_of(clips["full"])
    assert response.headers["content-disposition"] == 'attachment; filename="full.mp4"'
    assert response.headers["accept-ranges"] == "bytes"

    part = client.get(f"/stream/{video_id}/download", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    size = clips["full"].stat().st_size
    assert part.headers["content-range"] == f"bytes 1000-1999/{size}"
    assert part.content == clips["full"].read_bytes()[1000:2000]


def test_rung_mp4_is_h264_and_aac_of_the_whole_video_with_its_index_first(
    client, transcoded, tmp_path
):
    video_id = transcoded["full"]
    duration = client.get(f"/videos/{video_id}").json()["duration"]
    response = get_ok(client, f"/stream/{video_id}/download/720p.mp4")
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-disposition"] == 'attachment; filename="full-720p.mp4"'

    report = probe(response.content, tmp_path, "720p.mp4")
    streams = {s["codec_type"]: s for s in report["streams"]}
    assert set(streams) == {"video", "audio"}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (1280, 720)
    assert streams["audio"]["codec_name"] == "aac"
    assert float(report["format"]["duration"]) == pytest.approx(duration, abs=0.15)
    # In sync: both start together.
    assert abs(float(streams["video"]["start_time"]) - float(streams["audio"]["start_time"])) < 0.05
    boxes = top_level_boxes(response.content)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart

    part = client.get(f"/stream/{video_id}/download/720p.mp4", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert part.content == response.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(response.content)}"
    again = client.get(f"/stream/{video_id}/download/720p.mp4")
    assert again.headers["etag"] == response.headers["etag"]  # kept, not made again


def test_rung_mp4_of_a_silent_video_has_no_audio(client, transcoded, tmp_path):
    response = get_ok(client, f"/stream/{transcoded['silent']}/download/360p.mp4")
    report = probe(response.content, tmp_path, "360p.mp4")
    assert [s["codec_type"] for s in report["streams"]] == ["video"]


def test_concurrent_first_requests_make_one_file(client, transcoded, platform):
    video_id = transcoded["pal"]
    url = f"/stream/{video_id}/download/480p.mp4"
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: client.get(url), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert len({hashlib.sha256(r.content).hexdigest() for r in responses}) == 1
    folder = platform.files(video_id) / "hls" / video_id / "downloads"
    files = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))
    assert files == ["480p.mp4"]  # no half-written or temporary file left


def test_downloads_name_only_rungs_the_video_has(client, transcoded):
    video_id = transcoded["full"]
    missing = client.get(f"/stream/{video_id}/download/240p.mp4")
    assert missing.status_code == 404
    assert "1080p, 720p, 480p, 360p" in error_of(missing)
    assert client.get(f"/stream/{video_id}/download/audio.mp4").status_code == 404
    for name in ("720p.mkv", "720p", "mp4", "720p.mp4.lock", "%2e%2e", "..%2f720p.mp4"):
        response = client.get(f"/stream/{video_id}/download/{name}")
        assert 400 <= response.status_code < 500, (name, response.status_code)
        assert response.status_code != 200
    unknown = unknown_video_id()
    for path in ("download", "download/720p.mp4", "poster.jpg", "storyboard.vtt"):
        assert client.get(f"/stream/{unknown}/{path}").status_code == 404, path
        assert client.get(f"/stream/not-an-id/{path}").status_code == 400, path


def test_delete_removes_poster_storyboard_and_downloads(client, clips, platform):
    video_id, done = upload(client, clips["tiny"], chunk_size=1024 * 1024)
    assert done is not None and done.status_code == 200
    assert wait_status(client, video_id)["overall"] == "ok"
    paths = ("poster.jpg", "storyboard.vtt", "storyboard.jpg", "download/240p.mp4")
    for path in paths:
        get_ok(client, f"/stream/{video_id}/{path}")
    assert (platform.files(video_id) / "hls" / video_id / "downloads" / "240p.mp4").is_file()

    assert client.delete(f"/admin/videos/{video_id}").status_code == 200
    assert not (platform.files(video_id) / "hls" / video_id).exists()
    for path in paths:
        assert client.get(f"/stream/{video_id}/{path}").status_code == 404, path


# ---------------------------------------------------------------- private playback


def test_private_video_files_need_its_token_and_the_map_carries_it(clips, tmp_path):
    private = Platform(tmp_path / "storage", PLAYBACK_SIGNING_KEY="k" * 32).start()
    try:
        with private.client() as api:
            video_id, _ = upload(api, clips["tiny"], chunk_size=1024 * 1024)
            assert wait_status(api, video_id)["overall"] == "ok"
            token = api.post(f"/admin/videos/{video_id}/playback_token").json()["token"]
            paths = ("poster.jpg", "storyboard.vtt", "storyboard.jpg", "download")
            for path in (*paths, "download/240p.mp4"):
                assert api.get(f"/stream/{video_id}/{path}").status_code == 403, path
                get_ok(api, f"/stream/{video_id}/{path}?token={token}")
            vtt_url = f"/stream/{video_id}/storyboard.vtt?token={token}"
            found = cues(get_ok(api, vtt_url).text)
            for _, _, uri in found:
                assert f"?token={token}#xywh=" in uri
                tile = get_ok(api, urljoin(vtt_url, uri.split("#")[0]))
                assert tile.headers["content-type"] == "image/jpeg"
    finally:
        private.drop()
