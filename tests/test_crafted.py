"""Crafted uploads, through the gateway: files that would make ffmpeg read other files, and a
5 KB header that claims to last 31,000 years. None becomes a video, no answer shows a server
path, and nobody else's requests wait for them."""

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.clips import make_clip, make_duration_bomb
from tests.harness import Platform, upload, wait_status

CHUNK = 1024 * 1024
# The bomb's claim: 10^15 ms, which ffprobe reports as 10^12 s.
BOMB_MS = 1e15
# Generous: the refusal is a probe and a comparison; the figure is printed, not this bound.
REFUSAL_BOUND_SECONDS = 30
# Text that starts like an absolute path: a "/" after a start, a space, a quote or a colon.
ABSOLUTE_PATH = re.compile(r"(?:^|[\s'\"(=:])/[\w.-]")


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the platform's storage holding a real MP4 and the same as MPEG-TS."""
    folder = tmp_path_factory.mktemp("outside-storage")
    mp4 = make_clip(folder / "secret.mp4", width=320, height=240, seconds=2)
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(mp4)]
    subprocess.run([*argv, "-c", "copy", str(folder / "secret.ts")], check=True, timeout=60)
    return folder


def hls_master(victim_rung: str) -> str:
    return f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000000\n{victim_rung}\n"


def hls_media(segment: Path) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXTINF:2.0,"]
    return "\n".join([*lines, str(segment), "#EXT-X-ENDLIST", ""])


def dash_manifest(base_url: Path) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT2S" minBufferTime="PT1S" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">\n'
        '<Period><AdaptationSet mimeType="video/mp4">'
        '<Representation id="v" bandwidth="300000" width="320" height="240">'
        f"<BaseURL>{base_url}</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
    )


def victim_segment(platform: Platform, victim: str) -> Path:
    """Where the victim's first 720p segment lies in the storage folder (on S3: where it
    would, were the bucket a folder; the refusal must not depend on the file being there)."""
    first = next(
        key
        for key in platform.keys(f"hls/{victim}/720p/")
        if key.endswith(".ts") and "/seg_" in key
    )
    return platform.storage / first


# kind -> (the words the refusal must use, the upload's text from (platform, victim, outside)).
CRAFTED: dict[str, tuple[str, Callable[[Platform, str, Path], str]]] = {
    "hls_relative_to_another_videos_rung": (
        "an HLS playlist",
        lambda platform, victim, outside: hls_master(f"../../hls/{victim}/720p/playlist.m3u8"),
    ),
    "hls_absolute_to_another_videos_segment": (
        "an HLS playlist",
        lambda platform, victim, outside: hls_media(victim_segment(platform, victim)),
    ),
    "hls_absolute_to_a_ts_outside_storage": (
        "an HLS playlist",
        lambda platform, victim, outside: hls_media(outside / "secret.ts"),
    ),
    "dash_base_url_outside_storage": (
        "a DASH manifest",
        lambda platform, victim, outside: dash_manifest(outside / "secret.mp4"),
    ),
    "ffconcat_naming_a_file_outside_storage": (
        "an ffconcat list",
        lambda platform, victim, outside: f"ffconcat version 1.0\nfile {outside / 'secret.mp4'}\n",
    ),
}


def videos(client: httpx.Client) -> dict[str, str]:
    """Every video's status by id."""
    listed = client.get("/videos", params={"limit": 1000})
    assert listed.status_code == 200, listed.text
    return {v["id"]: v["status"] for v in listed.json()}


def assert_no_server_path(text: str | None, *folders: Path) -> None:
    for folder in folders:
        assert str(folder) not in (text or ""), text
    assert not ABSOLUTE_PATH.search(text or ""), text


@pytest.mark.parametrize("kind", CRAFTED)
def test_playlists_manifests_and_lists_are_not_videos_and_show_no_other_file(
    kind, client, platform, transcoded, outside, tmp_path
):
    words, text_of = CRAFTED[kind]
    victim = transcoded["full"]
    before = videos(client)
    crafted = tmp_path / "holiday.mp4"
    crafted.write_text(text_of(platform, victim, outside), encoding="utf-8")

    video_id, done = upload(client, crafted, chunk_size=CHUNK)

    assert done is not None and done.status_code == 422, done.text
    assert done.json()["error"] == "not_a_video"
    detail = done.json()["detail"]
    print(f"{kind}: {detail}")
    assert words in detail and "upload the video file itself" in detail
    video = client.get(f"/videos/{video_id}").json()
    status = client.get(f"/transcode/status/{video_id}").json()
    assert video["status"] == "failed" and status["overall"] == "failed"
    for public in (detail, video["error"], status["error"]):
        assert_no_server_path(public, outside, platform.storage)
    # No video came out of it: none is new but the refused one, none turned ok but those
    # that were on their way already (an earlier test's may finish meanwhile).
    after = videos(client)
    assert set(after) - set(before) == {video_id}
    assert all(
        before[v] in ("ok", "queued", "running")
        for v, s in after.items()
        if s == "ok" and v != video_id
    )
    assert platform.stored(f"hls/{video_id}/master.m3u8") is None


# --- the duration bomb ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of this module's own: were a bomb to get through, no other test's would hang."""
    running = Platform(tmp_path_factory.mktemp("bounded") / "storage").start()
    yield running
    running.drop()


@pytest.fixture
def bomb(tmp_path: Path) -> Path:
    made = make_duration_bomb(tmp_path / "bomb.mkv", claimed_ms=BOMB_MS)
    assert made.stat().st_size < 10_000, "a few KB"
    return made


class Meanwhile:
    """Another client's requests, sent one after another in a thread until stopped."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.answers: list[tuple[str, int, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Meanwhile":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)

    def _run(self) -> None:
        form = {"filename": "another.mp4", "total_chunks": 1, "total_size": 1000}
        with self.platform.client() as other:
            # At least a few rounds, even when the refusal is quicker than one.
            while not self.stop.is_set() or len(self.answers) < 6:
                self._time("GET /videos", lambda: other.get("/videos"))
                self._time("POST /upload/init", lambda: other.post("/upload/init", data=form))

    def _time(self, what: str, send: Callable[[], httpx.Response]) -> None:
        started = time.monotonic()
        try:
            status = send().status_code
        except httpx.HTTPError:
            status = 0
        self.answers.append((what, status, time.monotonic() - started))

    def report(self) -> str:
        slowest = max(seconds for _, _, seconds in self.answers)
        return f"{len(self.answers)} requests of another client answered, slowest {slowest:.2f} s"


def test_duration_bomb_is_refused_within_seconds_while_others_are_answered(bounded, bomb):
    with bounded.client() as client:
        upload_id, _ = upload(client, bomb, chunk_size=CHUNK, complete=False)
        with Meanwhile(bounded) as meanwhile:
            started = time.monotonic()
            try:
                done = client.post("/upload/complete", data={"upload_id": upload_id}, timeout=60)
            finally:
                elapsed = time.monotonic() - started
        print(
            f"duration bomb ({bomb.stat().st_size} B) refused in {elapsed:.2f} s; "
            f"{meanwhile.report()}"
        )
        assert done.status_code == 422, done.text
        assert done.json()["error"] == "beyond_limits"
        assert "12 h" in done.json()["detail"] and "MAX_DURATION_SECONDS" in done.json()["detail"]
        assert elapsed < REFUSAL_BOUND_SECONDS
        assert {status for _, status, _ in meanwhile.answers} == {200}, meanwhile.answers
        video = client.get(f"/videos/{upload_id}").json()
        assert video["status"] == "failed" and "12 h" in video["error"]


def test_a_started_over_video_whose_file_claims_too_much_fails_at_planning(bounded, bomb, clips):
    """A file accepted before the bounds (or before a limit was lowered) is planned again by a
    worker when it is started over: the worker refuses it too, at once."""
    with bounded.client() as client:
        video_id, done = upload(client, clips["tiny"], chunk_size=CHUNK)
        assert done is not None and done.status_code == 200, done.text
        assert wait_status(client, video_id)["overall"] == "ok"
        # What an older version accepted: the bomb's bytes as this video's original.
        bounded.put(f"originals/{video_id}/source", bomb.read_bytes())
        with Meanwhile(bounded) as meanwhile:
            started = time.monotonic()
            restarted = client.post("/transcode/start", json={"upload_id": video_id})
            assert restarted.status_code == 200, restarted.text
            status = wait_status(client, video_id, timeout=60)
            elapsed = time.monotonic() - started
        print(f"re-plan of the bomb failed in {elapsed:.2f} s; {meanwhile.report()}")
        assert status["overall"] == "failed"
        assert "12 h" in status["error"] and "MAX_DURATION_SECONDS" in status["error"]
        assert elapsed < REFUSAL_BOUND_SECONDS
        assert {status for _, status, _ in meanwhile.answers} == {200}, meanwhile.answers
