"""A caption's rendition served like every playback file: by the fast path and the route alike
(text/vtt segments, playlist caching, ETag), under the same token rules (a private video's
caption playlist carries the token into its segments' URIs), and only by valid names."""

import pytest

from services.core import ids, signing
from services.core.storage import Storage
from services.media.caption_hls import rendition_files
from services.media.captions import Cue
from tests.test_serving_fast import HEADERS, KEY, Video, call, streaming

CAPTION = "0123456789abcdef"


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory) -> Video:
    """A finished video with one caption's rendition (two 2 s WebVTT segments)."""
    storage = Storage(tmp_path_factory.mktemp("captions") / "storage")
    storage.ensure_layout()
    video = Video(storage, ids.new_video_id())
    folder = storage.caption_dir(video.video_id, CAPTION)
    folder.mkdir(parents=True)
    files = rendition_files([Cue(500, 2500, "hi")], duration=4.0, segment_seconds=2, mpegts=9)
    for name, text in files.items():
        (folder / name).write_text(text)
    storage.complete_marker(video.video_id).touch()
    return video


@pytest.mark.parametrize(
    ("name", "media_type", "cache"),
    [
        ("playlist.m3u8", "application/vnd.apple.mpegurl", "public, max-age=60"),
        ("seg_00001.vtt", "text/vtt; charset=utf-8", "public, max-age=31536000, immutable"),
    ],
)
async def test_caption_files_are_served_fast_as_the_route_serves_them(
    captioned: Video, name: str, media_type: str, cache: str
):
    app, seen = streaming(captioned.storage)
    url = captioned.url(f"captions/{CAPTION}/{name}")
    fast = await call(app, url, pathsend=False)
    routes = await call(app.app, url, pathsend=False)
    assert seen == [url], "only the direct call reached the routes"
    assert fast.status == routes.status == 200
    assert (fast.headers["content-type"], fast.headers["cache-control"]) == (media_type, cache)
    assert {h: fast.headers.get(h) for h in HEADERS} == {h: routes.headers.get(h) for h in HEADERS}
    path = captioned.storage.caption_dir(captioned.video_id, CAPTION) / name
    assert fast.body == routes.body == path.read_bytes()


async def test_a_private_videos_caption_needs_its_token_which_the_playlist_passes_on(
    captioned: Video,
):
    app, _ = streaming(captioned.storage, playback_signing_key=KEY)
    token = signing.sign(KEY, captioned.video_id, 600)
    playlist = captioned.url(f"captions/{CAPTION}/playlist.m3u8")
    segment = captioned.url(f"captions/{CAPTION}/seg_00000.vtt")
    for url in (playlist, segment):
        assert (await call(app, url)).status == 403
    signed = await call(app, playlist, query=f"token={token}")
    assert signed.status == 200 and signed.headers["cache-control"] == "private, no-cache"
    assert f"seg_00000.vtt?token={token}" in signed.body.decode()
    assert (await call(app, segment, query=f"token={token}")).status == 200


@pytest.mark.parametrize(
    ("relative", "status"),
    [
        (f"captions/{CAPTION}/seg_00009.vtt", 404),
        (f"captions/{CAPTION}/segment.vtt", 400),
        (f"captions/{CAPTION}/../../master.m3u8", 404),
        ("captions/NOT-AN-ID/playlist.m3u8", 400),
        (f"captions/{'f' * 16}/playlist.m3u8", 404),
    ],
)
async def test_only_a_caption_files_valid_name_is_served(
    captioned: Video, relative: str, status: int
):
    app, _ = streaming(captioned.storage)
    assert (await call(app, captioned.url(relative))).status == status
