"""The watch folder (STORAGE_DIR/incoming/): files dropped there become videos like uploads.

The platform tests drive a real platform whose upload service scans every second, with clips
rendered by lavfi; the claim and stability tests use the watch module on a folder of their own.
"""

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.db import engine
from services.core.settings import Settings
from services.core.storage import Storage
from services.upload.watch import Claim, Watcher, claim_file, lock_claim
from tests.clips import make_clip, make_duration_bomb
from tests.harness import Platform, sha256_of, wait_status

INTERVAL = "1"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small H.264 + AAC clip, rendered once for this module."""
    folder = tmp_path_factory.mktemp("watch-clips")
    return make_clip(folder / "clip.mp4", width=320, height=240, seconds=1)


@pytest.fixture(scope="module")
def watching(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose upload service scans its watch folder every second."""
    storage = tmp_path_factory.mktemp("watch-platform") / "storage"
    running = Platform(storage, WATCH_INTERVAL_SECONDS=INTERVAL).start()
    yield running
    running.drop()


@pytest.fixture(scope="module")
def http(watching: Platform) -> Iterator[httpx.Client]:
    with watching.client() as client:
        yield client


def incoming(platform: Platform) -> Path:
    return platform.storage / "incoming"


def drop(platform: Platform, source: Path, name: str) -> None:
    """Copy `source` in the safe way: written under a dotfile name, then renamed."""
    hidden = incoming(platform) / f".{name}"
    shutil.copyfile(source, hidden)
    os.rename(hidden, incoming(platform) / name)


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def videos_named(client: httpx.Client, filename: str) -> list[dict[str, Any]]:
    listed = client.get("/videos", params={"limit": 1000})
    assert listed.status_code == 200, listed.text
    return [v for v in listed.json() if v["filename"] == filename]


def wait_video(client: httpx.Client, filename: str) -> dict[str, Any]:
    found = wait_until(f"a video named {filename!r}", lambda: videos_named(client, filename))
    assert len(found) == 1, found
    return dict(found[0])


def pickup_logs(platform: Platform) -> list[dict[str, Any]]:
    """The upload service's JSON log lines about files picked up from the watch folder."""
    entries = []
    for line in platform.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and "picked up" in line:
            entries.append(json.loads(line))
    return entries


def leftovers(platform: Platform) -> list[str]:
    """What is still in incoming/ or its claim folder (failed/ excluded)."""
    names = [p.name for p in incoming(platform).iterdir() if p.name not in ("failed", ".claimed")]
    claims = incoming(platform) / ".claimed"
    return names + ([p.name for p in claims.iterdir()] if claims.exists() else [])


def test_a_dropped_file_becomes_a_video(watching, http, clip):
    drop(watching, clip, "Holiday clip.mp4")
    video = wait_video(http, "Holiday clip.mp4")
    assert wait_status(http, video["id"])["overall"] == "ok"
    assert video["sha256"] == sha256_of(clip)
    assert video["size"] == clip.stat().st_size
    stored = watching.stored(f"originals/{video['id']}/source") or b""
    assert hashlib.sha256(stored).hexdigest() == sha256_of(clip)
    assert http.get(f"/stream/{video['id']}/master.m3u8").status_code == 200
    assert leftovers(watching) == [], "the file left incoming/ and its claim was removed"
    logged = [e for e in pickup_logs(watching) if e.get("video_id") == video["id"]]
    assert logged and "Holiday clip.mp4" in logged[0]["message"]
    metrics = httpx.get(f"{watching.service_url('upload')}/metrics").text
    assert 'watch_folder_files_total{outcome="picked"}' in metrics


@pytest.mark.parametrize(
    "name",
    ["-starts with a dash.mp4", "Fête de l\u2019été 🎬 2026.mp4", "two  spaces 'and quotes'.mkv"],
)
def test_names_with_spaces_unicode_and_a_leading_dash_become_the_label(watching, http, clip, name):
    drop(watching, clip, name)
    video = wait_video(http, name)
    assert wait_status(http, video["id"])["overall"] == "ok"
    assert video["sha256"] == sha256_of(clip)


def test_a_file_being_written_slowly_is_not_picked_up_before_it_is_complete(watching, http, clip):
    data = clip.read_bytes()
    target = incoming(watching) / "slow copy.mp4"
    pieces = 40  # one every 0.1 s: 4 s of writing, several scans of the folder
    step = -(-len(data) // pieces)
    with target.open("wb") as out:
        for start in range(0, len(data), step):
            out.write(data[start : start + step])
            out.flush()
            time.sleep(0.1)
            assert target.exists(), "the watcher took the file while it was being written"
    video = wait_video(http, "slow copy.mp4")
    assert video["sha256"] == sha256_of(clip), "the video is the whole file"
    assert wait_status(http, video["id"])["overall"] == "ok"
    assert not (incoming(watching) / "failed" / "slow copy.mp4").exists()


def test_files_that_are_not_videos_go_to_failed_with_the_reason(watching, http, clip, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("these are notes, not a video\n" * 50, encoding="utf-8")
    drop(watching, text, "notes.mp4")
    drop(watching, text, "readme.txt")
    failed = incoming(watching) / "failed"
    reason = wait_until(
        "notes.mp4's error file",
        lambda: (
            (failed / "notes.mp4.error.txt").exists()
            and (failed / "notes.mp4.error.txt").read_text("utf-8")
        ),
    )
    assert "not a playable video" in reason
    assert (failed / "notes.mp4").read_bytes() == text.read_bytes(), "kept, never deleted"
    other = wait_until(
        "readme.txt's error file",
        lambda: (
            (failed / "readme.txt.error.txt").exists()
            and (failed / "readme.txt.error.txt").read_text("utf-8")
        ),
    )
    assert "video or audio file extension" in other
    # A later file is picked up: the folder was scanned again, and the refused ones stayed put.
    drop(watching, clip, "after the refusals.mp4")
    wait_video(http, "after the refusals.mp4")
    assert sorted(p.name for p in failed.iterdir() if "notes" in p.name or "readme" in p.name) == [
        "notes.mp4",
        "notes.mp4.error.txt",
        "readme.txt",
        "readme.txt.error.txt",
    ]
    assert videos_named(http, "notes.mp4") == [] and videos_named(http, "readme.txt") == []


def test_a_duration_bomb_and_a_playlist_go_to_failed_with_the_reason(watching, http, tmp_path):
    bomb = make_duration_bomb(tmp_path / "bomb.mkv", claimed_ms=1e15)
    playlist = tmp_path / "playlist.mp4"
    playlist.write_text(f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n{watching.storage}/x.m3u8\n")
    drop(watching, bomb, "bomb.mkv")
    drop(watching, playlist, "playlist.mp4")
    failed = incoming(watching) / "failed"
    reasons = {
        name: wait_until(
            f"{name}'s error file",
            lambda name=name: (
                (failed / f"{name}.error.txt").exists()
                and (failed / f"{name}.error.txt").read_text("utf-8")
            ),
        )
        for name in ("bomb.mkv", "playlist.mp4")
    }
    assert "12 h" in reasons["bomb.mkv"] and "MAX_DURATION_SECONDS" in reasons["bomb.mkv"]
    assert "an HLS playlist" in reasons["playlist.mp4"]
    assert videos_named(http, "bomb.mkv") == [] and videos_named(http, "playlist.mp4") == []


def test_a_symlink_to_a_file_outside_storage_is_not_followed(watching, http, clip, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "secret.mp4"
    shutil.copyfile(clip, canary)  # a real video: following the link would make it one
    before = canary.stat()
    (incoming(watching) / "secret.mp4").symlink_to(canary)
    failed = incoming(watching) / "failed"
    reason = wait_until(
        "the link's error file",
        lambda: (
            (failed / "secret.mp4.error.txt").exists()
            and (failed / "secret.mp4.error.txt").read_text("utf-8")
        ),
    )
    assert "symbolic link" in reason
    assert (failed / "secret.mp4").is_symlink(), "the link itself was moved, not its target"
    assert os.readlink(failed / "secret.mp4") == str(canary)
    after = canary.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert [p.name for p in outside.iterdir()] == ["secret.mp4"]
    assert videos_named(http, "secret.mp4") == []


def test_a_claim_left_by_a_crash_is_resumed_at_start(tmp_path, clip):
    storage = tmp_path / "storage"
    crashed = storage / "incoming" / ".claimed" / "0123456789abcdef"
    crashed.mkdir(parents=True)
    shutil.copyfile(clip, crashed / "crashed mid-claim.mp4")  # renamed in, never registered
    empty = storage / "incoming" / ".claimed" / "fedcba9876543210"
    empty.mkdir()
    (empty / ".lock").touch()  # a crash between creating a claim and renaming into it
    platform = Platform(storage, WATCH_INTERVAL_SECONDS="0.5").start()
    try:
        with platform.client() as client:
            video = wait_video(client, "crashed mid-claim.mp4")
            assert wait_status(client, video["id"])["overall"] == "ok"
            assert video["sha256"] == sha256_of(clip)
        assert list((storage / "incoming" / ".claimed").iterdir()) == []
    finally:
        platform.drop()


class Crash(BaseException):
    """What a killed process amounts to: nothing after this point runs, the flock goes."""


class CrashingWatcher(Watcher):
    """A watcher that dies right after declaring the upload, before the file is in place."""

    def _adopt(self, upload_id: str, payload: Path) -> None:
        raise Crash


def test_a_process_dying_after_declaring_the_upload_loses_nothing(watching, http, clip):
    settings = watching.settings()
    folder = incoming(watching) / ".claimed" / "00000000deadbeef"
    folder.mkdir(parents=True)
    claim = lock_claim(folder)  # held while the file goes in: the platform keeps off it
    assert claim is not None
    shutil.copyfile(clip, folder / "declared then died.mp4")
    try:
        with pytest.raises(Crash):
            CrashingWatcher(settings).process(claim)
    finally:
        engine(settings).dispose()
    declared = json.loads((folder / ".upload.json").read_text("utf-8"))["upload_id"]
    video = wait_video(http, "declared then died.mp4")  # the platform resumed the claim
    assert video["id"] == declared, "the declared upload was carried on, not a second one"
    assert video["sha256"] == sha256_of(clip)
    assert wait_status(http, video["id"])["overall"] == "ok"
    wait_until("the claim removed", lambda: not folder.exists())


# -- the watch module on a folder of the test's own (no platform) --------------------------


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    made = Storage(tmp_path / "storage")
    made.ensure_layout()
    return made


def test_of_racing_claimers_exactly_one_takes_each_file(storage):
    names = [f"clip {i}.mp4" for i in range(40)]
    for name in names:
        (storage.incoming_dir() / name).write_bytes(name.encode())
    start = threading.Barrier(4)

    def claimer() -> list[tuple[str, Claim]]:
        start.wait()
        taken = [(name, claim_file(storage, name)) for name in names]
        return [(name, claim) for name, claim in taken if claim is not None]

    with ThreadPoolExecutor(4) as pool:
        results = [pool.submit(claimer) for _ in range(4)]
        claims = [pair for done in results for pair in done.result()]
    assert sorted(name for name, _ in claims) == sorted(names)
    for name, claim in claims:
        assert (claim.folder / name).read_bytes() == name.encode()
        claim.release()
    assert [p.name for p in storage.incoming_dir().iterdir()] == [".claimed"]
    assert len(list((storage.incoming_dir() / ".claimed").iterdir())) == len(names)


def test_a_claim_held_by_a_live_process_is_not_resumed_by_another(storage):
    (storage.incoming_dir() / "busy.mp4").write_bytes(b"x")
    held = claim_file(storage, "busy.mp4")
    assert held is not None
    assert lock_claim(held.folder) is None, "the holder is alive: nobody else may resume it"
    held.release()
    resumed = lock_claim(held.folder)
    assert resumed is not None, "its holder died (the flock went with it): it may be resumed"
    resumed.release()


def test_a_file_is_ready_only_once_unchanged_between_two_scans(storage):
    watcher = Watcher(Settings(storage_dir=storage.root))
    growing = storage.incoming_dir() / "growing.mp4"
    growing.write_bytes(b"a" * 10)
    assert watcher.ready_names() == [], "first sight: it may still be written"
    with growing.open("ab") as out:
        out.write(b"b" * 10)
    assert watcher.ready_names() == [], "it grew since the last scan"
    assert watcher.ready_names() == ["growing.mp4"]


@pytest.mark.parametrize(
    "name", [".hidden.mp4", "movie.mp4.part", "movie.mp4.tmp", "movie.mp4.crdownload", "movie~"]
)
def test_dotfiles_and_temporary_names_are_left_alone(storage, name):
    watcher = Watcher(Settings(storage_dir=storage.root))
    (storage.incoming_dir() / name).write_bytes(b"still being written")
    assert watcher.ready_names() == []
    assert watcher.ready_names() == []


def test_an_empty_file_is_waited_for(storage):
    watcher = Watcher(Settings(storage_dir=storage.root))
    (storage.incoming_dir() / "just created.mp4").touch()
    assert watcher.ready_names() == []
    assert watcher.ready_names() == []
