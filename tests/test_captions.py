"""Captions through the gateway, on a real platform: WebVTT and SRT files uploaded, text
subtitle tracks extracted from MKV and MP4 uploads, each one a SUBTITLES rendition of the
master (checked with the m3u8 package), served as WebVTT segments mapped onto the video's
timestamps; a malformed file refused with its line named; delete."""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import m3u8
import pytest

from tests.clips import make_audio_clip, make_clip, make_subtitled_clip, write_srt
from tests.harness import unknown_video_id, upload, wait_status
from tests.test_hevc import upload_with_codec

CHUNK = 256 * 1024
SRT_TEXT = (
    "1\n00:00:00,500 --> 00:00:01,750\nHello, <i>world</i> & friends\n\n"
    '2\n00:00:02,250 --> 00:00:04,500\n<font color="red">Across</font> a segment boundary\n\n'
    "3\n00:00:05,000 --> 00:00:05,800\nLast words\n"
)
SRT_CUES = [
    ("00:00:00.500", "00:00:01.750", "Hello, <i>world</i> &amp; friends"),
    ("00:00:02.250", "00:00:04.500", "Across a segment boundary"),
    ("00:00:05.000", "00:00:05.800", "Last words"),
]
VTT_TEXT = (
    "WEBVTT - made by hand\n\nNOTE a comment that is not carried over\n\n"
    "intro\n00:00.250 --> 00:01.000 align:start line:10%\n<v Ana>Olá</v> <script>x</script>\n\n"
    "00:00:03.000 --> 00:00:03.500\nAté logo\n"
)
VTT_CUES = [
    ("00:00:00.250", "00:00:01.000", "<v Ana>Olá</v> x"),
    ("00:00:03.000", "00:00:03.500", "Até logo"),
]
CUE = re.compile(
    r"^(\d{2}:\d{2}:\d{2}\.\d{3}) --> (\d{2}:\d{2}:\d{2}\.\d{3})[^\n]*\n(.*?)\n\n", re.M | re.S
)
TIMESTAMP_MAP = re.compile(r"^X-TIMESTAMP-MAP=MPEGTS:(\d+),LOCAL:00:00:00\.000$", re.M)


@pytest.fixture(scope="module")
def video(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 6 s video (three 2 s segments) transcoded to ok."""
    clip = make_clip(tmp_path_factory.mktemp("cap") / "six.mp4", width=320, height=240, seconds=6)
    video_id, done = upload(client, clip, chunk_size=CHUNK)
    assert done is not None and done.status_code == 200, done.text
    assert wait_status(client, video_id)["overall"] == "ok"
    return video_id


def post_caption(client: httpx.Client, video_id: str, text: str, **fields: str) -> httpx.Response:
    """A caption file sent as a multipart form, as `curl -F file=@... -F language=...` does."""
    return client.post(
        f"/videos/{video_id}/captions",
        data=fields,
        files={"file": ("captions.txt", text.encode(), "application/octet-stream")},
    )


def master_of(client: httpx.Client, video_id: str) -> m3u8.M3U8:
    response = client.get(f"/stream/{video_id}/master.m3u8")
    assert response.status_code == 200, response.text
    return m3u8.loads(response.text)


def subtitles_of(master: m3u8.M3U8) -> list[Any]:
    return [media for media in master.media if media.type == "SUBTITLES"]


def rendition(
    client: httpx.Client, video_id: str, uri: str
) -> tuple[list[tuple[str, str, str]], set[int]]:
    """Every cue of a caption's rendition (repeats across segments counted once), and the
    MPEGTS values of its segments' timestamp maps."""
    base = f"/stream/{video_id}/{uri.rsplit('/', 1)[0]}"
    playlist = client.get(f"/stream/{video_id}/{uri}")
    assert playlist.status_code == 200
    assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
    parsed = m3u8.loads(playlist.text)
    assert parsed.is_endlist and parsed.segments
    cues: list[tuple[str, str, str]] = []
    maps: set[int] = set()
    for segment in parsed.segments:
        answer = client.get(f"{base}/{segment.uri}")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/vtt")
        assert answer.text.startswith("WEBVTT\n")
        maps |= {int(value) for value in TIMESTAMP_MAP.findall(answer.text)}
        for found in CUE.findall(answer.text):
            if found not in cues:
                cues.append(found)
    return cues, maps


def first_pts(client: httpx.Client, video_id: str, tmp: Path) -> int:
    """The lowest timestamp (90 kHz) of the top rung's first segment, as ffprobe reads it."""
    master = master_of(client, video_id)
    rung = master.playlists[0].uri.split("/")[0]
    segment = tmp / "first.ts"
    segment.write_bytes(client.get(f"/stream/{video_id}/{rung}/seg_00000.ts").content)
    argv = ["ffprobe", "-v", "error", "-show_entries", "packet=pts", "-of", "json", str(segment)]
    packets = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)["packets"]
    return min(int(p["pts"]) for p in packets)


def test_srt_upload_becomes_a_webvtt_subtitles_rendition(client, video, tmp_path):
    added = post_caption(client, video, SRT_TEXT, language="en", label="English")
    assert added.status_code == 201, added.text
    caption = added.json()
    assert (caption["language"], caption["label"], caption["format"]) == ("en", "English", "srt")
    assert caption["cues"] == 3 and caption["origin"] == "upload" and not caption["default"]
    master = master_of(client, video)
    subtitles = {media.name: media for media in subtitles_of(master)}
    media = subtitles["English"]
    assert (media.group_id, media.language, media.default, media.autoselect) == (
        "subs",
        "en",
        "NO",
        "YES",
    )
    assert media.uri == f"captions/{caption['id']}/playlist.m3u8"
    assert all(variant.stream_info.subtitles == "subs" for variant in master.playlists)
    cues, maps = rendition(client, video, media.uri)
    # Converted: points for commas, <font> gone, a bare & escaped; the cue that crosses the
    # 2 s and 4 s boundaries is in three segments, and once here.
    assert cues == SRT_CUES
    # Cue time 0 is the first frame: the video's own first timestamp.
    assert maps == {first_pts(client, video, tmp_path)}


def test_vtt_upload_as_raw_text_with_query_parameters(client, video):
    added = client.post(
        f"/videos/{video}/captions",
        params={"language": "pt-br", "label": 'Português "BR"', "default": "true"},
        content=VTT_TEXT.encode(),
        headers={"Content-Type": "text/vtt"},
    )
    assert added.status_code == 201, added.text
    caption = added.json()
    # The tag in its standard form; the label kept as given.
    assert (caption["language"], caption["label"], caption["default"]) == (
        "pt-BR",
        'Português "BR"',
        True,
    )
    media = next(m for m in subtitles_of(master_of(client, video)) if m.language == "pt-BR")
    assert (media.name, media.default) == ("Português 'BR'", "YES")
    cues, _ = rendition(client, video, media.uri)
    assert cues == VTT_CUES
    listed = client.get(f"/videos/{video}/captions").json()
    assert caption["id"] in [c["id"] for c in listed]
    assert next(c for c in listed if c["id"] == caption["id"])["playlist"] == (
        f"/stream/{video}/{media.uri}"
    )


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (
            "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nok\n\n00:00:03.000 -> 00:00:04.000\nx\n",
            6,
            "timing",
        ),
        (
            "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 --> 00:00:0x,000\nx\n",
            6,
            "timestamp",
        ),
        ("WEBVTT\n\n00:00:05.000 --> 00:00:04.000\nbackwards\n", 3, "before it starts"),
        (
            "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\none\n00:00:02.000 --> 00:00:03.000\ntwo\n",
            5,
            "blank line",
        ),
        ("Just some text\nthat is no caption file\n", 1, "neither WebVTT"),
    ],
)
def test_malformed_caption_file_is_400_naming_the_line(client, video, text, line, says):
    refused = post_caption(client, video, text, language="en")
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["error"] == "invalid_captions"
    assert body["detail"].startswith(f"line {line}:") and says in body["detail"]


def test_bad_requests_say_what_to_fix(client, platform, video):
    assert post_caption(client, video, SRT_TEXT, language="english!").status_code == 400
    assert "BCP 47" in post_caption(client, video, SRT_TEXT, language="xx-zz").json()["detail"]
    assert "language" in post_caption(client, video, SRT_TEXT).json()["detail"]
    assert post_caption(client, unknown_video_id(), SRT_TEXT, language="en").status_code == 404
    not_utf8 = client.post(
        f"/videos/{video}/captions?language=en",
        content="WEBVTT\n\n00:01.000 --> 00:02.000\nol\xe1\n".encode("latin-1"),
        headers={"Content-Type": "text/vtt"},
    )
    assert not_utf8.status_code == 400 and "line 4: " in not_utf8.json()["detail"]
    with httpx.Client(base_url=platform.url) as stranger:
        assert post_caption(stranger, video, SRT_TEXT, language="en").status_code == 401
    too_big = "WEBVTT\n\n" + "x" * (2 * 1024 * 1024)
    assert post_caption(client, video, too_big, language="en").status_code == 413


def test_deleted_caption_leaves_the_master_and_its_files_go(client, platform, video):
    caption = post_caption(client, video, SRT_TEXT, language="de", label="Deutsch").json()
    uri = f"captions/{caption['id']}/playlist.m3u8"
    assert uri in [m.uri for m in subtitles_of(master_of(client, video))]
    deleted = client.delete(f"/videos/{video}/captions/{caption['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": caption["id"]}
    assert uri not in [m.uri for m in subtitles_of(master_of(client, video))]
    assert client.get(f"/stream/{video}/{uri}").status_code == 404
    assert caption["id"] not in [c["id"] for c in client.get(f"/videos/{video}/captions").json()]
    files = platform.files(video)
    assert not (files / "hls" / video / "captions" / caption["id"]).exists()
    assert not (files / "originals" / video / "captions" / f"{caption['id']}.vtt").exists()
    assert client.delete(f"/videos/{video}/captions/{caption['id']}").status_code == 404


def test_caption_added_before_the_video_plays_is_in_its_master(client, tmp_path):
    clip = make_clip(tmp_path / "early.mp4", width=320, height=240, seconds=3)
    video_id, done = upload(client, clip, chunk_size=CHUNK)
    assert done is not None and done.status_code == 200
    added = post_caption(client, video_id, SRT_TEXT, language="fr", label="Français")
    assert added.status_code == 201, added.text
    assert wait_status(client, video_id)["overall"] == "ok"
    names = [m.name for m in subtitles_of(master_of(client, video_id))]
    assert names == ["Français"]


def test_an_audio_only_video_gets_captions_on_its_one_variant(client, tmp_path):
    clip = make_audio_clip(tmp_path / "talk.m4a", seconds=6, encoder=["-c:a", "aac"])
    video_id, done = upload(client, clip, chunk_size=CHUNK)
    assert done is not None and done.status_code == 200, done.text
    assert wait_status(client, video_id)["overall"] == "ok"
    added = post_caption(client, video_id, SRT_TEXT, language="en")
    assert added.status_code == 201, added.text
    master = master_of(client, video_id)
    (media,) = subtitles_of(master)
    assert (media.name, [p.stream_info.subtitles for p in master.playlists]) == (
        "English",
        ["subs"],
    )
    cues, maps = rendition(client, video_id, media.uri)
    assert cues == SRT_CUES
    # Time 0 is the sound's first timestamp there.
    first = tmp_path / "first.ts"
    first.write_bytes(client.get(f"/stream/{video_id}/audio/seg_00000.ts").content)
    argv = ["ffprobe", "-v", "error", "-show_entries", "packet=pts", "-of", "json", str(first)]
    packets = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)["packets"]
    assert maps == {min(int(p["pts"]) for p in packets)}


def test_on_the_hevc_ladder_cue_time_zero_is_the_first_fmp4_frame(client, tmp_path):
    clip = make_clip(tmp_path / "hevc.mp4", width=320, height=240, seconds=6)
    video_id = upload_with_codec(client, clip, "hevc")
    assert wait_status(client, video_id)["overall"] == "ok"
    assert post_caption(client, video_id, SRT_TEXT, language="en").status_code == 201
    master = master_of(client, video_id)
    (media,) = subtitles_of(master)
    cues, maps = rendition(client, video_id, media.uri)
    assert cues == SRT_CUES
    rung = master.playlists[0].uri.split("/")[0]
    joined = tmp_path / "first.mp4"
    init = client.get(f"/stream/{video_id}/{rung}/init.mp4").content
    joined.write_bytes(init + client.get(f"/stream/{video_id}/{rung}/seg_00000.m4s").content)
    argv = ["ffprobe", "-v", "error", "-show_entries", "packet=pts_time", "-of", "json"]
    report = subprocess.run([*argv, str(joined)], capture_output=True, check=True).stdout
    first = min(float(p["pts_time"]) for p in json.loads(report)["packets"])
    # The fragments' own timeline at 90 kHz: the chunk offset, no MPEG-TS muxer delay.
    assert maps == {round(first * 90_000)} == {900_000}


@pytest.fixture(scope="module")
def subtitled(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An MKV with a SubRip and an ASS track and an MP4 with a mov_text track, made by ffmpeg
    from SRT files written here, uploaded and transcoded: file name -> video id."""
    folder = tmp_path_factory.mktemp("subtitled")
    english = write_srt(folder / "en.srt", [(0.5, 1.5, "One"), (2.5, 3.25, "Two")])
    portuguese = write_srt(folder / "pt.srt", [(1.0, 2.0, "Um"), (3.0, 3.75, "Dois")])
    clips = [
        make_subtitled_clip(
            folder / "tracks.mkv",
            seconds=4,
            tracks=[(english, "subrip", "eng", "English SDH"), (portuguese, "ass", "por", "")],
        ),
        make_subtitled_clip(
            folder / "tracks.mp4", seconds=4, tracks=[(english, "mov_text", "fre", "")]
        ),
    ]
    ids = {}
    for clip in clips:
        video_id, done = upload(client, clip, chunk_size=CHUNK)
        assert done is not None and done.status_code == 200, done.text
        ids[clip.name] = video_id
    for video_id in ids.values():
        assert wait_status(client, video_id)["overall"] == "ok"
    return ids


def test_text_tracks_of_an_mkv_become_captions(client, subtitled):
    video_id = subtitled["tracks.mkv"]
    listed = client.get(f"/videos/{video_id}/captions").json()
    assert [(c["language"], c["label"], c["format"], c["origin"]) for c in listed] == [
        ("en", "English SDH", "subrip", "embedded"),
        ("pt", "Portuguese", "ass", "embedded"),
    ]
    subtitles = subtitles_of(master_of(client, video_id))
    assert [(m.language, m.name) for m in subtitles] == [
        ("en", "English SDH"),
        ("pt", "Portuguese"),
    ]
    english, _ = rendition(client, video_id, subtitles[0].uri)
    portuguese, _ = rendition(client, video_id, subtitles[1].uri)
    assert english == [
        ("00:00:00.500", "00:00:01.500", "One"),
        ("00:00:02.500", "00:00:03.250", "Two"),
    ]
    assert portuguese == [
        ("00:00:01.000", "00:00:02.000", "Um"),
        ("00:00:03.000", "00:00:03.750", "Dois"),
    ]


def test_mov_text_track_of_an_mp4_becomes_a_caption(client, subtitled):
    video_id = subtitled["tracks.mp4"]
    listed = client.get(f"/videos/{video_id}/captions").json()
    assert [(c["language"], c["label"], c["format"]) for c in listed] == [
        ("fr", "French", "mov_text")
    ]
    (media,) = subtitles_of(master_of(client, video_id))
    cues, _ = rendition(client, video_id, media.uri)
    assert cues == [
        ("00:00:00.500", "00:00:01.500", "One"),
        ("00:00:02.500", "00:00:03.250", "Two"),
    ]


def test_captions_go_with_the_video(client, platform, subtitled):
    video_id = subtitled["tracks.mkv"]
    ids = [c["id"] for c in client.get(f"/videos/{video_id}/captions").json()]
    assert ids
    assert client.delete(f"/videos/{video_id}").status_code == 200
    assert client.get(f"/videos/{video_id}/captions").status_code == 404
    files = platform.files(video_id)
    assert not (files / "originals" / video_id).exists()
    assert not (files / "hls" / video_id).exists()
