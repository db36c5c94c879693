"""Hot segments kept in memory (services/core/segment_cache.py, used by the HLS fast path):
kept on a second ask, within their capacity, never past a change of the file, never past the
access rules; the answers from memory are the file answers byte for byte, headers included."""

import os
import time
from pathlib import Path

import pytest

from services.core import ids, segment_cache, signing
from services.core.segment_cache import SegmentCache, version_key
from services.core.storage import Storage
from tests.test_serving_fast import KEY, Video, call, render_rung, streaming

MiB = 1024 * 1024


def write(path: Path, data: bytes) -> os.stat_result:
    """Put `data` at `path` as the platform does: a new file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path.stat()


async def ask(cache: SegmentCache, path: Path) -> bytes | None:
    """One request's use of the cache: its bytes, else noted as asked for (and read settled)."""
    key = version_key(path, path.stat())
    body = cache.get(key)
    if body is None:
        cache.missed(key)
        await cache.settled()
    return body


async def test_a_file_is_kept_from_its_second_ask(tmp_path: Path):
    cache = SegmentCache(MiB)
    segment = tmp_path / "seg_00000.ts"
    data = os.urandom(50_000)
    write(segment, data)

    assert await ask(cache, segment) is None  # first ask: only remembered
    assert cache.kept_bytes == 0
    assert await ask(cache, segment) is None  # second ask: read in the background
    assert cache.kept_bytes == len(data)
    assert await ask(cache, segment) == data


async def test_kept_bytes_stay_within_the_capacity_least_recently_used_out_first(
    tmp_path: Path,
):
    cache = SegmentCache(MiB)
    files = [tmp_path / f"seg_{i:05d}.ts" for i in range(12)]
    for path in files:
        write(path, os.urandom(100_000))

    for path in files:
        await ask(cache, path)
        await ask(cache, path)
        assert cache.kept_bytes <= MiB
        await ask(cache, files[0])  # kept in use all along

    assert await ask(cache, files[0]) == files[0].read_bytes()
    assert await ask(cache, files[-1]) == files[-1].read_bytes()
    assert cache.get(version_key(files[1], files[1].stat())) is None  # long unused: out


async def test_a_file_too_large_for_its_share_and_a_zero_capacity_keep_nothing(tmp_path: Path):
    big = tmp_path / "big.ts"
    write(big, os.urandom(MiB // 8 + 1))
    small = tmp_path / "small.ts"
    write(small, b"x" * 1000)
    cache, off = SegmentCache(MiB), SegmentCache(0)

    for _ in range(3):
        assert await ask(cache, big) is None
        assert await ask(off, small) is None
    assert cache.kept_bytes == off.kept_bytes == 0


async def test_a_replaced_file_is_never_answered_with_its_old_bytes(tmp_path: Path):
    cache = SegmentCache(MiB)
    segment = tmp_path / "seg_00000.ts"
    old = write(segment, b"old" * 1000)
    await ask(cache, segment)
    await ask(cache, segment)
    assert cache.get(version_key(segment, old)) == b"old" * 1000

    write(segment, b"new" * 1000)

    assert await ask(cache, segment) is None  # another version: another key
    await ask(cache, segment)
    assert await ask(cache, segment) == b"new" * 1000


async def test_a_file_that_changed_while_being_read_is_not_kept(tmp_path: Path):
    cache = SegmentCache(MiB)
    segment = tmp_path / "seg_00000.ts"
    seen = write(segment, b"a" * 1000)
    key = version_key(segment, seen)
    cache.missed(key)
    write(segment, b"b" * 2000)  # replaced between the request's stat and the read

    cache.missed(key)
    await cache.settled()

    assert cache.kept_bytes == 0


# --- through the fast path ---------------------------------------------------------------------


@pytest.fixture
def hot_video(tmp_path: Path) -> Video:
    storage = Storage(tmp_path / "storage")
    storage.ensure_layout()
    made = Video(storage, ids.new_video_id())
    render_rung(made.rung("360p"))
    storage.complete_marker(made.video_id).touch()
    return made


async def test_a_hot_segment_is_sent_from_memory_with_the_same_answer(hot_video: Video):
    app, seen = streaming(hot_video.storage)
    url = hot_video.url("360p/seg_00000.ts")
    data = (hot_video.rung("360p") / "seg_00000.ts").read_bytes()

    first = await call(app, url)
    second = await call(app, url)
    await app.segments.settled()
    hot = await call(app, url)
    hot_again = await call(app, url, headers={"Origin": "https://elsewhere.example"})

    assert first.pathsend is not None and second.pathsend is not None
    assert (hot.status, hot.pathsend, hot.body) == (200, None, data)
    assert hot.headers == first.headers  # length, type, caching, ETag, CORS alike
    assert hot.headers["content-length"] == str(len(data))
    assert hot_again.body == data and hot_again.headers["access-control-allow-origin"] == "*"
    assert app.segments.kept_bytes == len(data)
    assert seen == []


async def test_ranges_head_and_revalidation_of_a_hot_segment_are_unchanged(hot_video: Video):
    app, _ = streaming(hot_video.storage)
    url = hot_video.url("360p/seg_00000.ts")
    data = (hot_video.rung("360p") / "seg_00000.ts").read_bytes()
    for _ in range(2):
        first = await call(app, url)
    await app.segments.settled()

    part = await call(app, url, headers={"Range": "bytes=188-375"})
    head = await call(app, url, method="HEAD")
    again = await call(app, url, headers={"If-None-Match": first.headers["etag"]})

    assert (part.status, part.body) == (206, data[188:376])
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", str(len(data)))
    assert (again.status, again.body) == (304, b"")


async def test_a_hot_segment_of_a_private_video_still_needs_its_token(hot_video: Video):
    app, seen = streaming(hot_video.storage, playback_signing_key=KEY)
    token = signing.sign(KEY, hot_video.video_id, 600)
    expired = signing.sign(KEY, hot_video.video_id, 60, now=time.time() - 120)
    url = hot_video.url("360p/seg_00000.ts")
    for _ in range(2):
        await call(app, url, query=f"token={token}")
    await app.segments.settled()
    assert app.segments.kept_bytes > 0

    assert (await call(app, url, query=f"token={token}")).pathsend is None  # from memory
    for query in ("", f"token={expired}"):
        refused = await call(app, url, query=query)
        assert (
            refused.status == 403
            and refused.body != (hot_video.rung("360p") / "seg_00000.ts").read_bytes()
        )
    assert len(seen) == 2


async def test_a_deleted_or_replaced_hot_segment_is_never_served_from_memory(hot_video: Video):
    app, seen = streaming(hot_video.storage)
    url = hot_video.url("360p/seg_00000.ts")
    segment = hot_video.rung("360p") / "seg_00000.ts"
    for _ in range(2):
        await call(app, url)
    await app.segments.settled()

    write(segment, b"\x47" * 188 * 10)
    replaced = await call(app, url)
    segment.unlink()
    deleted = await call(app, url)

    assert replaced.status == 200 and replaced.pathsend == str(segment)
    assert replaced.headers["content-length"] == str(188 * 10)
    assert deleted.status == 404 and seen == [url]


async def test_a_zero_capacity_keeps_nothing(hot_video: Video):
    app, _ = streaming(hot_video.storage, segment_cache_mb=0)
    url = hot_video.url("360p/seg_00000.ts")

    answers = [await call(app, url) for _ in range(4)]
    await app.segments.settled()

    assert all(a.pathsend is not None for a in answers)
    assert app.segments.kept_bytes == 0


async def test_a_growing_playlist_is_never_kept_as_a_segment(tmp_path: Path):
    storage = Storage(tmp_path / "storage")
    growing = Video(storage, ids.new_video_id())  # no marker: still being encoded
    lines = "".join(f"#EXTINF:2.0,\nseg_{i:05d}.ts\n" for i in range(4000))
    write(growing.rung("360p") / "playlist.m3u8", f"#EXTM3U\n{lines}".encode())
    app, _ = streaming(storage)

    for _ in range(3):
        answer = await call(app, growing.url("360p/playlist.m3u8"))
        assert answer.headers["cache-control"] == "no-cache"
    await app.segments.settled()

    assert app.segments.kept_bytes == 0


async def test_reads_waiting_at_once_are_bounded_and_a_later_ask_keeps_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(segment_cache, "FILLING", 1)
    cache = SegmentCache(MiB)
    first, second = tmp_path / "seg_00000.ts", tmp_path / "seg_00001.ts"
    write(first, b"1" * 1000)
    write(second, b"2" * 1000)
    keys = [version_key(path, path.stat()) for path in (first, second)]

    for _ in range(2):  # both asked for twice before any read ends: one read at a time
        for key in keys:
            cache.missed(key)
    await cache.settled()
    assert cache.kept_bytes == 1000

    assert await ask(cache, second) is None  # remembered all along: this ask reads it
    assert await ask(cache, second) == b"2" * 1000


def _sample(metrics: str, prefix: str) -> float:
    """The value of the sample starting with `prefix` (0 if there is none yet)."""
    values = [
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(prefix)
    ]
    return values[0] if values else 0.0


async def test_metrics_show_hits_misses_and_the_bytes_kept(hot_video: Video):
    app, _ = streaming(hot_video.storage)
    url = hot_video.url("360p/seg_00000.ts")
    size = (hot_video.rung("360p") / "seg_00000.ts").stat().st_size
    hit = 'segment_cache_requests_total{result="hit",service="streaming"}'
    miss = 'segment_cache_requests_total{result="miss",service="streaming"}'
    before = (await call(app, "/metrics")).body.decode()

    for _ in range(2):
        await call(app, url)
    await app.segments.settled()
    for _ in range(3):
        await call(app, url)
    metrics = (await call(app, "/metrics")).body.decode()

    assert _sample(metrics, hit) - _sample(before, hit) == 3
    assert _sample(metrics, miss) - _sample(before, miss) == 2
    assert _sample(metrics, 'segment_cache_bytes{service="streaming"}') == size
