"""Streaming, delete and /admin/status with STORAGE_URL=s3://...: playlists, segments and
downloads answered from the bucket with the local folder's ranges, ETags, types, caching,
CORS and token rules; a delete leaves no object; an unreachable bucket is a 503 that says so.

The video is put in place by the test (a real ffmpeg HLS ladder stored under its layout keys,
its row marked ok), since uploads and the worker on S3 are tested elsewhere."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.core import ids, signing
from services.core.app import create_app
from services.core.db import session_scope
from services.core.layout import VideoLayout
from services.core.models import Status, Video
from services.core.settings import Settings, get_settings
from services.core.storage.s3 import S3Store
from services.streaming.media_routes import router as media_router
from services.streaming.routes import router
from tests.harness import Platform, free_ports, s3_env
from tests.s3server import S3Server
from tests.test_serving_fast import render_rung

KEY = "k" * 32
CAPTION = "0123456789abcdef"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
IMMUTABLE = "public, max-age=31536000, immutable"
SOURCE = b"the original upload, as sent\n" * 400


@dataclass(frozen=True)
class Ladder:
    """A real two-rung HLS ladder on disk (TS and fMP4), keyed by its name below hls/{id}/."""

    files: dict[str, bytes]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Ladder:
    folder = tmp_path_factory.mktemp("ladder")
    render_rung(folder / "360p")
    render_rung(folder / "240p", fmp4=True)
    files = {
        f"{rung}/{path.name}": path.read_bytes()
        for rung in ("360p", "240p")
        for path in sorted((folder / rung).iterdir())
    }
    files["360p/iframes.m3u8"] = (
        b"#EXTM3U\n#EXT-X-I-FRAMES-ONLY\n#EXT-X-BYTERANGE:188@0\nseg_00000.ts\n#EXT-X-ENDLIST\n"
    )
    files["master.m3u8"] = (
        b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x240\n360p/playlist.m3u8\n"
        b"#EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=320x240\n240p/playlist.m3u8\n"
    )
    files[f"captions/{CAPTION}/playlist.m3u8"] = (
        b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_00000.vtt\n#EXT-X-ENDLIST\n"
    )
    files[f"captions/{CAPTION}/seg_00000.vtt"] = b"WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n"
    files["poster.jpg"] = b"\xff\xd8\xff\xe0 not really a jpeg"
    files["downloads/360p.mp4"] = b"an mp4 of the 360p rung" * 100
    return Ladder(files)


def put_video(
    store: S3Store, ladder: Ladder, *, finished: bool = True, platform: Platform | None = None
) -> str:
    """A new video's objects in the bucket (and its row, status ok, in the platform's
    database): what an upload and a finished encode would have left."""
    video_id = ids.new_video_id()
    lay = VideoLayout.of(video_id)
    store.put_bytes(lay.source, SOURCE)
    for name, data in ladder.files.items():
        store.put_bytes(f"{lay.hls}{name}", data)
    if finished:
        store.put_bytes(lay.complete, b"")
    if platform is not None:
        settings = Settings(storage_dir=platform.storage, database_url=platform.database_url)
        with session_scope(settings) as session:
            session.add(
                Video(
                    id=video_id,
                    filename="clip.mp4",
                    size=len(SOURCE),
                    status=Status.OK,
                    qualities=["360p", "240p"],
                )
            )
    return video_id


def object_bytes(store: S3Store, key: str) -> bytes:
    return b"".join(store.read_range(key))


@pytest.fixture
def video(s3_platform: Platform, platform_store: S3Store, ladder: Ladder) -> str:
    return put_video(platform_store, ladder, platform=s3_platform)


# --- through the platform (gateway → streaming) ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "media_type", "cache"),
    [
        ("master.m3u8", PLAYLIST_TYPE, "public, max-age=60"),
        ("360p/playlist.m3u8", PLAYLIST_TYPE, "public, max-age=60"),
        ("360p/iframes.m3u8", PLAYLIST_TYPE, "public, max-age=60"),
        ("360p/seg_00001.ts", "video/mp2t", IMMUTABLE),
        ("240p/init.mp4", "video/mp4", IMMUTABLE),
        ("240p/seg_00000.m4s", "video/iso.segment", IMMUTABLE),
        (f"captions/{CAPTION}/playlist.m3u8", PLAYLIST_TYPE, "public, max-age=60"),
        (f"captions/{CAPTION}/seg_00000.vtt", "text/vtt; charset=utf-8", IMMUTABLE),
    ],
)
def test_playlists_and_segments_are_the_objects_bytes(
    s3_client: httpx.Client,
    platform_store: S3Store,
    video: str,
    name: str,
    media_type: str,
    cache: str,
):
    answer = s3_client.get(f"/stream/{video}/{name}")

    assert answer.status_code == 200, answer.text
    assert answer.content == object_bytes(platform_store, f"{VideoLayout.of(video).hls}{name}")
    assert answer.headers["content-type"] == media_type
    assert answer.headers["cache-control"] == cache
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.headers["etag"] and answer.headers["last-modified"]


def test_playlists_of_an_unfinished_presentation_are_not_cached(
    s3_client: httpx.Client, platform_store: S3Store, ladder: Ladder
):
    growing = put_video(platform_store, ladder, finished=False)

    playlist = s3_client.get(f"/stream/{growing}/360p/playlist.m3u8")
    segment = s3_client.get(f"/stream/{growing}/360p/seg_00000.ts")

    assert (playlist.status_code, playlist.headers["cache-control"]) == (200, "no-cache")
    assert segment.headers["cache-control"] == IMMUTABLE


@pytest.mark.parametrize("name", ["360p/seg_00000.ts", "360p/playlist.m3u8"])
def test_byte_ranges_are_206_and_past_the_end_416(
    s3_client: httpx.Client, platform_store: S3Store, video: str, name: str
):
    whole = object_bytes(platform_store, f"{VideoLayout.of(video).hls}{name}")
    url = f"/stream/{video}/{name}"

    part = s3_client.get(url, headers={"Range": "bytes=10-99"})
    tail = s3_client.get(url, headers={"Range": "bytes=-7"})
    past = s3_client.get(url, headers={"Range": f"bytes={len(whole)}-"})
    several = s3_client.get(url, headers={"Range": "bytes=0-3,40-49"})

    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 10-99/{len(whole)}"
    assert part.content == whole[10:100]
    assert (tail.status_code, tail.content) == (206, whole[-7:])
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(whole)}"
    assert several.status_code == 206
    assert several.headers["content-type"].startswith("multipart/byteranges")
    assert whole[0:4] in several.content and whole[40:50] in several.content


@pytest.mark.parametrize("name", ["360p/seg_00000.ts", "master.m3u8"])
def test_etag_revalidation_is_a_304(s3_client: httpx.Client, video: str, name: str):
    url = f"/stream/{video}/{name}"
    first = s3_client.get(url)

    again = s3_client.get(url, headers={"If-None-Match": first.headers["etag"]})
    other = s3_client.get(url, headers={"If-None-Match": '"another"'})

    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == first.headers["etag"]
    assert (other.status_code, other.content) == (200, first.content)


def test_head_of_a_segment_has_its_length_and_no_body(
    s3_client: httpx.Client, platform_store: S3Store, video: str
):
    key = VideoLayout.of(video).segment("360p", "seg_00000.ts")

    answer = s3_client.head(f"/stream/{video}/360p/seg_00000.ts")

    assert answer.status_code == 200
    assert answer.headers["content-length"] == str(len(object_bytes(platform_store, key)))
    assert answer.content == b""


def test_original_poster_and_download_come_from_the_bucket(
    s3_client: httpx.Client, video: str, ladder: Ladder
):
    original = s3_client.get(f"/stream/{video}/download")
    ranged = s3_client.get(f"/stream/{video}/original", headers={"Range": "bytes=5-20"})
    poster = s3_client.get(f"/stream/{video}/poster.jpg")
    rung = s3_client.get(f"/stream/{video}/download/360p.mp4")

    assert (original.status_code, original.content) == (200, SOURCE)
    assert original.headers["content-disposition"] == 'attachment; filename="clip.mp4"'
    assert (ranged.status_code, ranged.content) == (206, SOURCE[5:21])
    assert (poster.status_code, poster.content) == (200, ladder.files["poster.jpg"])
    assert poster.headers["content-type"] == "image/jpeg"
    assert (rung.status_code, rung.content) == (200, ladder.files["downloads/360p.mp4"])
    assert rung.headers["content-type"] == "video/mp4"


def test_missing_objects_and_bad_names_are_clear_4xx(s3_client: httpx.Client, video: str):
    unknown = ids.new_video_id()

    assert s3_client.get(f"/stream/{unknown}/master.m3u8").status_code == 404
    assert s3_client.get(f"/stream/{video}/360p/seg_00099.ts").status_code == 404
    assert s3_client.get(f"/stream/{video}/1080p/playlist.m3u8").status_code == 404
    assert s3_client.get(f"/stream/{video}/360p/evil.sh").status_code == 400
    assert s3_client.get(f"/stream/{video}/.complete").status_code == 404
    assert s3_client.get(f"/stream/{unknown}/poster.jpg").status_code == 404


def test_admin_video_status_lists_the_bucket(s3_client: httpx.Client, video: str):
    files = s3_client.get(f"/admin/videos/{video}/status").json()["files"]

    assert files == {
        "original_bytes": len(SOURCE),
        "renditions": {"240p": 2, "360p": 2},
        "master_playlist": True,
    }


def test_delete_leaves_no_object(s3_client: httpx.Client, platform_store: S3Store, video: str):
    lay = VideoLayout.of(video)
    assert list(platform_store.list_prefix(lay.hls))

    deleted = s3_client.delete(f"/admin/videos/{video}")

    assert deleted.status_code == 200, deleted.text
    assert list(platform_store.list_prefix(lay.originals)) == []
    assert list(platform_store.list_prefix(lay.hls)) == []
    assert s3_client.get(f"/stream/{video}/master.m3u8").status_code == 404


def test_admin_status_names_the_bucket_and_says_it_answers(
    s3_client: httpx.Client, s3_platform: Platform, s3_server: S3Server
):
    answer = s3_client.get("/admin/status")

    bucket, _, prefix = s3_platform.env["STORAGE_URL"].removeprefix("s3://").partition("/")
    assert answer.status_code == 200
    assert answer.json()["storage"] == {
        "backend": "s3",
        "bucket": bucket,
        "prefix": prefix,
        "endpoint": s3_server.endpoint,
        "reachable": True,
        "problem": None,
    }
    assert s3_server.secret_key not in answer.text


# --- in-process: private playback and MEDIA_PUBLIC_URL -------------------------------------


def s3_settings(server: S3Server, platform_store: S3Store, **changes: object) -> Settings:
    prefix = platform_store.prefix.rstrip("/")
    return Settings().model_copy(
        update={
            "storage_url": f"s3://{server.bucket}/{prefix}",
            "aws_endpoint_url": server.endpoint,
            "aws_access_key_id": server.access_key,
            "aws_secret_access_key": server.secret_key,
            "aws_region": server.region,
            **changes,
        }
    )


def streaming_client(settings: Settings) -> httpx.AsyncClient:
    api = create_app("streaming", [media_router, router])
    api.dependency_overrides[get_settings] = lambda: settings
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test")


async def test_private_playback_needs_its_token_and_carries_it(
    s3_server: S3Server, platform_store: S3Store, ladder: Ladder
):
    video = put_video(platform_store, ladder)
    settings = s3_settings(
        s3_server, platform_store, playback_signing_key=KEY, media_public_url="https://cdn.test"
    )
    token = signing.sign(KEY, video, 600)
    async with streaming_client(settings) as client:
        refused = await client.get(f"/stream/{video}/360p/seg_00000.ts")
        playlist = await client.get(f"/stream/{video}/360p/playlist.m3u8?token={token}")
        segment = await client.get(f"/stream/{video}/360p/seg_00000.ts?token={token}")

    key = VideoLayout.of(video).segment("360p", "seg_00000.ts")
    assert refused.status_code == 403
    assert playlist.headers["cache-control"] == "private, no-cache"
    # Never a public object URL for a private video: its segments stay behind the token check.
    assert "cdn.test" not in playlist.text
    assert f"seg_00000.ts?token={token}" in playlist.text
    assert (segment.status_code, segment.content) == (200, object_bytes(platform_store, key))


async def test_public_playlists_send_segments_to_media_public_url(
    s3_server: S3Server, platform_store: S3Store, ladder: Ladder
):
    video = put_video(platform_store, ladder)
    settings = s3_settings(s3_server, platform_store, media_public_url="https://cdn.test/media")
    async with streaming_client(settings) as client:
        ts = await client.get(f"/stream/{video}/360p/playlist.m3u8")
        fmp4 = await client.get(f"/stream/{video}/240p/playlist.m3u8")
        master = await client.get(f"/stream/{video}/master.m3u8")

    lay = VideoLayout.of(video)
    base = f"https://cdn.test/media/{platform_store.prefix}"
    assert f"\n{base}{lay.segment('360p', 'seg_00000.ts')}\n" in ts.text
    assert "\nseg_" not in ts.text
    assert f'URI="{base}{lay.segment("240p", "init.mp4")}"' in fmp4.text
    # The master's rung playlists stay with the service (they grow; the token rules apply).
    assert master.content == ladder.files["master.m3u8"]


# --- the bucket unreachable -----------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_platform(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Platform]:
    """A platform whose S3 endpoint is a port nobody listens on."""
    (port,) = free_ports(1)
    env = {
        **s3_env(s3_server, prefix=f"dead-{uuid.uuid4().hex[:8]}"),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "S3_MAX_ATTEMPTS": "1",
    }
    running = Platform(tmp_path_factory.mktemp("dead") / "scratch", **env).start()
    yield running
    running.drop()


def add_row(platform: Platform, video_id: str) -> None:
    settings = Settings(storage_dir=platform.storage, database_url=platform.database_url)
    with session_scope(settings) as session:
        session.add(Video(id=video_id, filename="clip.mp4", status=Status.OK, qualities=["360p"]))


def test_an_unreachable_bucket_is_a_503_that_says_so(dead_platform: Platform):
    video = ids.new_video_id()
    add_row(dead_platform, video)
    with dead_platform.client() as client:
        segment = client.get(f"/stream/{video}/360p/seg_00000.ts")
        playlist = client.get(f"/stream/{video}/master.m3u8")
        original = client.get(f"/stream/{video}/original")
        deleted = client.delete(f"/admin/videos/{video}")
        kept = client.get(f"/stream/{video}/qualities")
        status = client.get("/admin/status")

    # The record stays when its objects could not be removed: the delete can be asked again.
    assert kept.status_code == 200
    for answer in (segment, playlist, original, deleted):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "storage_unavailable"
        assert "cannot be reached" in answer.json()["detail"]
    stored = status.json()["storage"]
    assert (status.status_code, stored["backend"], stored["reachable"]) == (200, "s3", False)
    assert "cannot be reached" in stored["problem"]


def test_scratch_folder_holds_no_media(s3_platform: Platform, video: str):
    scratch = Path(s3_platform.storage)
    media = [p for p in scratch.rglob("*") if p.is_file() and video in str(p)]
    assert media == []
