"""Audio-only uploads (podcasts, songs, voice memos) become audio-only HLS.

Each format is rendered with lavfi (a sine tone), uploaded through the gateway with the
chunked API and with tus, and checked the way a player needs it: a master whose one variant
is AAC audio, segments that probe as stereo AAC of the source's duration, no pictures.
"""

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import m3u8
import pytest

from tests.clips import make_audio_clip
from tests.harness import Platform, upload, wait_status
from tests.test_hevc import upload_with_codec

TUS = {"Tus-Resumable": "1.0.0"}
# What the AAC rendition may add to the source's length: the encoder's priming frame (1024
# samples, 21 ms at 48 kHz, which MPEG-TS has no edit list to hide) and the last frame
# padded to a whole one (< 21 ms); a raw ADTS source brings a priming frame of its own.
# Measured here: 25 to 45 ms over the rendered length. A tenth of a second bounds that with
# room, and is still under one 2 s segment's twentieth: a lost or doubled segment fails.
DURATION_TOLERANCE = 0.1
# The stereo the platform encodes every audio rendition in (HLS authoring spec [2.3]).
STEREO = 2


@dataclass(frozen=True)
class Source:
    """One audio file to upload: its name, how it is rendered, how it travels."""

    name: str
    seconds: float
    encoder: tuple[str, ...]
    channels: int
    sample_rate: int
    transport: str
    cover: bool = False


SOURCES = [
    Source("episode.m4a", 7.5, ("-c:a", "aac"), 2, 48000, "chunked"),
    Source("song.mp3", 6.3, ("-c:a", "libmp3lame"), 1, 44100, "chunked", cover=True),
    Source("memo.wav", 5.2, ("-c:a", "pcm_s16le"), 1, 16000, "chunked"),
    Source("surround.flac", 4.7, ("-c:a", "flac"), 6, 96000, "chunked"),
    Source("voice.ogg", 5.5, ("-c:a", "libopus"), 2, 48000, "chunked"),
    Source("episode-tus.m4a", 4.4, ("-c:a", "aac"), 2, 44100, "tus"),
    Source("song-tus.mp3", 3.9, ("-c:a", "libmp3lame"), 2, 48000, "tus"),
    Source("voice.opus", 4.1, ("-c:a", "libopus", "-f", "ogg"), 1, 48000, "tus"),
    Source("radio.oga", 3.6, ("-c:a", "libvorbis", "-f", "ogg"), 2, 44100, "tus"),
    Source("raw.aac", 4.2, ("-c:a", "aac", "-f", "adts"), 2, 48000, "tus"),
    Source("memo-tus.wav", 3.3, ("-c:a", "pcm_s16le"), 2, 22050, "tus"),
    Source("surround-tus.flac", 3.1, ("-c:a", "flac"), 6, 48000, "tus"),
]


def tus_upload(client: httpx.Client, path: Path) -> tuple[str, httpx.Response]:
    """`path` sent with tus in one PATCH (the upload completes at its last byte)."""
    data = path.read_bytes()
    name = base64.b64encode(path.name.encode()).decode()
    created = client.post(
        "/files/",
        headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": f"filename {name}"},
    )
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    headers = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    return url.rstrip("/").rsplit("/", 1)[1], client.patch(url, content=data, headers=headers)


def send(client: httpx.Client, path: Path, transport: str) -> str:
    """Upload `path` by `transport`; return the video id once it is registered."""
    if transport == "tus":
        video_id, done = tus_upload(client, path)
        assert done.status_code == 204, done.text
        return video_id
    video_id, response = upload(client, path, chunk_size=64 * 1024)
    assert response is not None and response.status_code == 200, response.text
    return video_id


@dataclass(frozen=True)
class Uploaded:
    source: Source
    path: Path
    video_id: str


@pytest.fixture(scope="module")
def uploaded(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Uploaded]:
    """Every source rendered, uploaded, and transcoded to `ok` (source name -> upload)."""
    folder = tmp_path_factory.mktemp("audio-only")
    done = {}
    for source in SOURCES:
        path = make_audio_clip(
            folder / source.name,
            seconds=source.seconds,
            encoder=list(source.encoder),
            channels=source.channels,
            sample_rate=source.sample_rate,
            cover=source.cover,
        )
        done[source.name] = Uploaded(source, path, send(client, path, source.transport))
    for item in done.values():
        status = wait_status(client, item.video_id, timeout=120)
        assert status["overall"] == "ok", (item.source.name, status)
    return done


def ffprobe(path: Path) -> dict[str, Any]:
    argv = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    done = subprocess.run([*argv, str(path)], capture_output=True, check=True, timeout=60)
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def audio_seconds(path: Path) -> float:
    """How long the audio in `path` plays: its samples, decoded, at 48 kHz. (ffprobe's format
    duration of MPEG-TS leaves out the last PES packet, which holds several AAC frames, so it
    reads up to a tenth of a second short.)"""
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0"]
    argv += ["-ac", "1", "-ar", "48000", "-f", "s16le", "pipe:1"]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=60)
    return len(done.stdout) / 2 / 48000


def master_of(client: httpx.Client, video_id: str) -> m3u8.M3U8:
    response = client.get(f"/stream/{video_id}/master.m3u8")
    assert response.status_code == 200, response.text
    return m3u8.loads(response.text)


def fetched_segments(
    client: httpx.Client, video_id: str, into: Path
) -> tuple[Path, list[float], list[int]]:
    """The audio playlist's segments fetched through the gateway and joined into one file;
    with each segment's EXTINF and size."""
    media = m3u8.loads(client.get(f"/stream/{video_id}/audio/playlist.m3u8").text)
    assert media.playlist_type == "vod" and media.is_endlist
    sizes, joined = [], b""
    for segment in media.segments:
        response = client.get(f"/stream/{video_id}/audio/{segment.uri}")
        assert response.status_code == 200, response.text
        sizes.append(len(response.content))
        joined += response.content
    into.write_bytes(joined)
    return into, [s.duration for s in media.segments], sizes


NAMES = [s.name for s in SOURCES]


@pytest.mark.parametrize("name", NAMES)
def test_audio_upload_becomes_an_ok_video_offering_audio_only(
    client: httpx.Client, uploaded: dict[str, Uploaded], name: str
) -> None:
    item = uploaded[name]
    video = client.get(f"/videos/{item.video_id}").json()
    assert video["status"] == "ok"
    assert video["qualities"] == ["audio"]
    assert video["audio_only"] is True
    assert (video["width"], video["height"], video["fps"], video["video_codec"]) == (None,) * 4
    assert video["duration"] == pytest.approx(item.source.seconds, abs=DURATION_TOLERANCE)
    assert client.get(f"/stream/{item.video_id}/qualities").json()["qualities"] == ["audio"]
    status = client.get(f"/transcode/status/{item.video_id}").json()
    assert status["progress"] == 100
    assert status["qualities"] == {"audio": {"status": "ok", "progress": 100.0}}
    assert status["playable"] is True
    assert (status["chunks_total"], status["chunks_published"]) == (1, 1)


@pytest.mark.parametrize("name", NAMES)
def test_master_has_one_aac_variant_and_no_video(
    client: httpx.Client, uploaded: dict[str, Uploaded], name: str
) -> None:
    master = master_of(client, uploaded[name].video_id)
    assert len(master.playlists) == 1
    variant = master.playlists[0]
    assert variant.uri == "audio/playlist.m3u8"
    assert variant.stream_info.codecs == "mp4a.40.2"
    assert variant.stream_info.resolution is None and variant.stream_info.frame_rate is None
    assert not master.media and not master.iframe_playlists


@pytest.mark.parametrize("name", NAMES)
def test_audio_segments_are_stereo_aac_of_the_sources_duration(
    client: httpx.Client, uploaded: dict[str, Uploaded], name: str, tmp_path: Path
) -> None:
    item = uploaded[name]
    joined, extinfs, _ = fetched_segments(client, item.video_id, tmp_path / "audio.ts")
    report = ffprobe(joined)
    kinds = [s["codec_type"] for s in report["streams"]]
    assert kinds == ["audio"], "one audio stream, no video (not even the cover art)"
    audio = report["streams"][0]
    assert (audio["codec_name"], audio["profile"]) == ("aac", "LC")
    assert audio["channels"] == STEREO
    produced = audio_seconds(joined)
    print(f"{name}: source {item.source.seconds} s, segments {produced:.3f} s")
    assert produced == pytest.approx(item.source.seconds, abs=DURATION_TOLERANCE)
    assert sum(extinfs) == pytest.approx(item.source.seconds, abs=DURATION_TOLERANCE)


@pytest.mark.parametrize("name", ["episode.m4a", "voice.opus"])
def test_master_bandwidths_are_measured_from_the_segments(
    client: httpx.Client, uploaded: dict[str, Uploaded], name: str, tmp_path: Path
) -> None:
    item = uploaded[name]
    info = master_of(client, item.video_id).playlists[0].stream_info
    _, extinfs, sizes = fetched_segments(client, item.video_id, tmp_path / "audio.ts")
    average = sum(sizes) * 8 / sum(extinfs)
    # HLS authoring spec: average within 10 % of AVERAGE-BANDWIDTH [1.26], peak at most
    # 200 % of the average [1.30].
    assert info.average_bandwidth == pytest.approx(average, rel=0.1)
    assert info.average_bandwidth <= info.bandwidth <= 2 * info.average_bandwidth


def test_an_audio_upload_that_asks_for_hevc_plays_as_fmp4_audio(
    client: httpx.Client, uploaded: dict[str, Uploaded], tmp_path: Path
) -> None:
    # The codec choice has no picture to apply to; it still decides the segment format.
    item = uploaded["episode.m4a"]
    video_id = upload_with_codec(client, item.path, "hevc")
    assert wait_status(client, video_id)["overall"] == "ok"
    master = master_of(client, video_id)
    assert [p.stream_info.codecs for p in master.playlists] == ["mp4a.40.2"]
    media = m3u8.loads(client.get(f"/stream/{video_id}/audio/playlist.m3u8").text)
    assert media.segment_map and media.segment_map[0].uri == "init.mp4"
    whole = client.get(f"/stream/{video_id}/audio/init.mp4").content
    whole += b"".join(
        client.get(f"/stream/{video_id}/audio/{s.uri}").content for s in media.segments
    )
    joined = tmp_path / "audio.mp4"
    joined.write_bytes(whole)
    streams = ffprobe(joined)["streams"]
    assert [(s["codec_name"], s["channels"]) for s in streams] == [("aac", STEREO)]
    assert audio_seconds(joined) == pytest.approx(item.source.seconds, abs=DURATION_TOLERANCE)


@pytest.mark.parametrize("what", ["poster.jpg", "storyboard.vtt", "storyboard.jpg"])
def test_an_audio_only_video_has_no_pictures_and_says_so(
    client: httpx.Client, uploaded: dict[str, Uploaded], what: str
) -> None:
    video_id = uploaded["song.mp3"].video_id  # cover art and all: still no poster
    response = client.get(f"/stream/{video_id}/{what}")
    assert response.status_code == 404
    picture = "poster" if what == "poster.jpg" else "storyboard"
    assert f"an audio-only video has no {picture}" in response.json()["detail"]


def test_the_audio_downloads_as_an_m4a_and_the_original_as_it_was(
    client: httpx.Client, uploaded: dict[str, Uploaded], tmp_path: Path
) -> None:
    item = uploaded["surround.flac"]
    download = client.get(f"/stream/{item.video_id}/download/audio.m4a")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "audio/mp4"
    assert 'filename="surround-audio.m4a"' in download.headers["content-disposition"]
    saved = tmp_path / "audio.m4a"
    saved.write_bytes(download.content)
    report = ffprobe(saved)
    assert [s["codec_name"] for s in report["streams"]] == ["aac"]
    assert audio_seconds(saved) == pytest.approx(item.source.seconds, abs=DURATION_TOLERANCE)
    original = client.get(f"/stream/{item.video_id}/original")
    assert original.status_code == 200 and original.content == item.path.read_bytes()


def test_an_audio_only_video_has_no_rung_mp4_to_download(
    client: httpx.Client, uploaded: dict[str, Uploaded]
) -> None:
    video_id = uploaded["episode.m4a"].video_id
    wrong = client.get(f"/stream/{video_id}/download/audio.mp4")
    assert wrong.status_code == 404
    assert "its audio downloads as audio.m4a" in wrong.json()["detail"]
    rung = client.get(f"/stream/{video_id}/download/720p.mp4")
    assert rung.status_code == 404
    assert "has no rung 720p: it has audio" in rung.json()["detail"]


def test_a_video_offers_no_audio_m4a(client: httpx.Client, transcoded: dict[str, str]) -> None:
    video_id = transcoded["tiny"]
    response = client.get(f"/stream/{video_id}/download/audio.m4a")
    assert response.status_code == 404
    assert "has no rung audio" in response.json()["detail"]
    rung = client.get(f"/videos/{video_id}").json()["qualities"][0]
    wrong = client.get(f"/stream/{video_id}/download/{rung}.m4a")
    assert wrong.status_code == 404
    assert f"its {rung} downloads as {rung}.mp4" in wrong.json()["detail"]


def subtitles_only(folder: Path) -> Path:
    """A Matroska file holding a subtitle track and nothing to see or hear."""
    words = folder / "words.srt"
    words.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n", encoding="utf-8")
    path = folder / "words.mkv"
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(words), "-c:s", "srt", str(path)]
    subprocess.run(argv, check=True, timeout=60)
    return path


@pytest.mark.parametrize("transport", ["chunked", "tus"])
def test_a_file_with_neither_video_nor_audio_is_still_not_a_video(
    client: httpx.Client, tmp_path: Path, transport: str
) -> None:
    path = subtitles_only(tmp_path)
    if transport == "tus":
        video_id, response = tus_upload(client, path)
    else:
        video_id, done = upload(client, path, chunk_size=64 * 1024)
        assert done is not None
        response = done
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "not_a_video"
    assert "no video or audio stream" in response.json()["detail"]
    assert client.get(f"/videos/{video_id}").json()["status"] == "failed"


# --- stop, resume, retry, start over and the watch folder, on a platform of their own --------

# Real ffmpeg, except: while `slow` exists every run reads its input in real time (-re), so
# an audio encode lasts as long as the sound and can be caught running; while `fail` exists
# the audio encode (the only run that maps 0:a:0) fails.
SLOW_OR_FAILING_FFMPEG = """#!/bin/sh
if [ -e "{fail}" ]; then
  case "$*" in *"-map 0:a:0 "*) echo "injected failure" >&2; exit 1 ;; esac
fi
[ -e "{slow}" ] && exec ffmpeg -re "$@"
exec ffmpeg "$@"
"""


@dataclass(frozen=True)
class Flows:
    platform: Platform
    client: httpx.Client
    slow: Path
    fail: Path
    clips: Path


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flows]:
    folder = tmp_path_factory.mktemp("audio-flows")
    slow, fail = folder / "slow", folder / "fail"
    wrapper = folder / "ffmpeg"
    wrapper.write_text(SLOW_OR_FAILING_FFMPEG.format(slow=slow, fail=fail))
    wrapper.chmod(0o755)
    platform = Platform(
        folder / "storage",
        FFMPEG_BIN=str(wrapper),
        MAX_ATTEMPTS="2",
        RETRY_BACKOFF_SECONDS="0.2",
        WATCH_INTERVAL_SECONDS="1",
    ).start()
    clips = folder / "clips"
    clips.mkdir()
    try:
        with platform.client() as client:
            yield Flows(platform, client, slow, fail, clips)
    finally:
        platform.drop()


def test_an_audio_job_stops_mid_encode_resumes_and_its_progress_never_drops(
    flows: Flows,
) -> None:
    client = flows.client
    path = make_audio_clip(flows.clips / "talk.m4a", seconds=20, encoder=["-c:a", "aac"])
    flows.slow.touch()
    try:
        video_id = send(client, path, "chunked")
        progress: list[float] = []

        def sample() -> dict[str, Any]:
            status: dict[str, Any] = client.get(f"/transcode/status/{video_id}").json()
            progress.append(status["progress"])
            return status

        # Encoded in real time, the audio is caught part-way: progress shows it.
        deadline = time.monotonic() + 30
        while (status := sample())["progress"] < 10 and time.monotonic() < deadline:
            assert status["overall"] in ("queued", "running"), status
            time.sleep(0.1)
        assert status["overall"] == "running" and status["progress"] < 100
        assert 0 < status["qualities"]["audio"]["progress"] < 100
        assert client.post(f"/admin/videos/{video_id}/stop").status_code == 200
        stopped = wait_status(client, video_id, {"stopped"}, timeout=10)
        assert stopped["playable"] is False, "nothing is published before the audio is done"
        # 10 s: left alone, the real-time audio would run 16 s more and end by itself.
        assert flows.platform.wait_no_ffmpeg(10) == [], "stop ended the audio's ffmpeg"
    finally:
        flows.slow.unlink()
    assert client.post(f"/admin/videos/{video_id}/resume").status_code == 200
    deadline = time.monotonic() + 60
    while sample()["overall"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert progress == sorted(progress), progress
    assert progress[-1] == 100
    assert len(master_of(client, video_id).playlists) == 1


def test_a_failing_audio_encode_retries_fails_the_job_and_resume_finishes_it(
    flows: Flows,
) -> None:
    client = flows.client
    path = make_audio_clip(flows.clips / "broken.wav", seconds=2, encoder=["-c:a", "pcm_s16le"])
    flows.fail.touch()
    try:
        video_id = send(client, path, "tus")
        failed = wait_status(client, video_id, timeout=60)
    finally:
        flows.fail.unlink()
    assert failed["overall"] == "failed"
    assert "audio failed 2 times" in failed["error"] and "injected failure" in failed["error"]
    assert client.post(f"/admin/videos/{video_id}/resume").status_code == 200
    assert wait_status(client, video_id, timeout=60)["overall"] == "ok"
    assert client.get(f"/videos/{video_id}").json()["qualities"] == ["audio"]


def test_an_audio_video_started_over_is_planned_again_by_a_worker(flows: Flows) -> None:
    client = flows.client
    path = make_audio_clip(flows.clips / "again.flac", seconds=3, encoder=["-c:a", "flac"])
    video_id = send(client, path, "chunked")
    assert wait_status(client, video_id)["overall"] == "ok"
    started = client.post("/transcode/start", json={"upload_id": video_id})
    assert started.status_code == 200, started.text
    assert wait_status(client, video_id)["overall"] == "ok"
    master = master_of(client, video_id)
    assert [p.stream_info.codecs for p in master.playlists] == ["mp4a.40.2"]


def test_an_audio_file_dropped_in_the_watch_folder_becomes_an_audio_only_video(
    flows: Flows,
) -> None:
    client = flows.client
    path = make_audio_clip(flows.clips / "dropped.mp3", seconds=3, encoder=["-c:a", "libmp3lame"])
    incoming = flows.platform.storage / "incoming"
    hidden = incoming / ".dropped.mp3"
    hidden.write_bytes(path.read_bytes())
    hidden.rename(incoming / "dropped.mp3")
    video_id, deadline = "", time.monotonic() + 60
    while not video_id and time.monotonic() < deadline:
        time.sleep(0.2)
        listed = client.get("/videos", params={"limit": 100}).json()
        video_id = next((v["id"] for v in listed if v["filename"] == "dropped.mp3"), "")
    assert video_id, "the dropped file became a video within 60 s"
    assert wait_status(client, video_id)["overall"] == "ok"
    video = client.get(f"/videos/{video_id}").json()
    assert (video["qualities"], video["audio_only"]) == (["audio"], True)
