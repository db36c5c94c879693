"""public_text: what the platform shows the public names no server path and stays bounded."""

from pathlib import Path

import pytest

from services.core.redact import PLACEHOLDER, ROOT_NAME, public_text

ROOT = "/srv/video platform/storage"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            f"ffmpeg exited with code 1: {ROOT}/hls/ab12/720p/seg_00003.ts: No space left",
            "ffmpeg exited with code 1: seg_00003.ts: No space left",
        ),
        (
            f"[hls @ 0x5] Opening '{ROOT}/hls/ab12/720p/playlist.m3u8.tmp' for writing",
            "[hls @ 0x5] Opening 'playlist.m3u8.tmp' for writing",
        ),
        (
            f'Error opening input file "{ROOT}/originals/ab12/source".',
            'Error opening input file "source".',
        ),
        (f"the storage folder {ROOT} is full", f"the storage folder {ROOT_NAME} is full"),
        (f"below {ROOT}/: nothing", f"below {ROOT_NAME}: nothing"),
        (f"as a URL: file://{ROOT}/hls/ab12/master.m3u8", "as a URL: master.m3u8"),
    ],
)
def test_paths_below_the_storage_folder_become_base_names(message, expected):
    assert public_text(message, roots=[ROOT]) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Impossible to open '/etc/passwd'", "Impossible to open 'passwd'"),
        (
            "[Errno 2] No such file or directory: '/var/lib/other place/x.ts'",
            "[Errno 2] No such file or directory: 'x.ts'",
        ),
        ("/opt/media/a.ts: Invalid data found", "a.ts: Invalid data found"),
        ("(/opt/media/a.ts) and [/opt/media/b.ts]", "(a.ts) and [b.ts]"),
        ("read file:/etc/hostname then file:///etc/shadow.", "read hostname then shadow."),
        ("url=/tmp/x/y.m3u8", "url=y.m3u8"),
        ("not found:/tmp/x/y.m3u8", "not found:y.m3u8"),
        ("the root '/' itself", f"the root '{PLACEHOLDER}' itself"),
        ("dir /tmp/abc/ is gone", "dir abc is gone"),
    ],
)
def test_absolute_paths_anywhere_become_base_names(message, expected):
    assert public_text(message, roots=[]) == expected


@pytest.mark.parametrize(
    "message",
    [
        "frame rate 30000/1001, 128 kb/s, and/or stereo",
        "see https://example.com/docs/limits and http://127.0.0.1:8000/videos/x",
        "the playlist names ../../hls/ab12/720p/playlist.m3u8",
        "chunk 3 failed 2 times: ffmpeg exited with code 1 (SIGKILL)",
    ],
)
def test_text_without_server_paths_is_kept(message):
    assert public_text(message, roots=[ROOT]) == message


def test_the_storage_folder_with_spaces_leaves_no_fragment():
    text = public_text(f"cannot write {ROOT}/hls/ab12/720p/seg_00000.ts now", roots=[ROOT])
    assert "video platform" not in text and "/srv" not in text
    assert text == "cannot write seg_00000.ts now"


def test_a_relative_storage_setting_is_removed_as_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = (tmp_path / "shared storage").resolve()
    text = public_text(f"{absolute}/hls/x/seg.ts: broken", roots=[Path("shared storage")])
    assert text == "seg.ts: broken"


def test_long_text_keeps_its_start_and_end_within_the_limit():
    message = "chunk 0 failed: " + "x" * 5000 + " the real reason"
    text = public_text(message, limit=300, roots=[])
    assert len(text) <= 300
    assert text.startswith("chunk 0 failed: ") and text.endswith(" the real reason")


def test_control_characters_are_blanked_but_lines_kept():
    assert public_text("a\x1b[31mred\x00\nnext", roots=[]) == "a [31mred \nnext"


def test_making_text_public_twice_changes_nothing_more():
    once = public_text(f"'{ROOT}/hls/x/a b.ts' and /etc/passwd and {ROOT}", roots=[ROOT])
    assert public_text(once, roots=[ROOT]) == once


def test_the_apis_own_paths_in_a_hint_are_kept():
    message = "video x is failed: the original is at /stream/ab12/download; see /upload/init"
    assert public_text(message, roots=[ROOT]) == message


def test_a_quoted_path_is_kept_when_it_names_no_place_on_this_server():
    message = "no asset '/nosuchtoplevel/a b/c.ts' for video x"
    assert public_text(message, roots=[]) == message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (  # ffmpeg reading an original through a SigV4 presigned URL
            "ffmpeg exited with code 1: http://s3.example:8333/media/originals/ab12/source"
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261204%2Fus-east-1"
            "&X-Amz-Date=20261204T094800Z&X-Amz-Expires=43200&X-Amz-SignedHeaders=host"
            "&X-Amz-Signature=a9190d5b: Server returned 403 Forbidden (access denied)",
            "ffmpeg exited with code 1: source: Server returned 403 Forbidden (access denied)",
        ),
        (  # a SigV2 one, quoted
            "Opening 'https://b.s3.amazonaws.com/hls/ab12/720p/seg_00001.ts?AWSAccessKeyId=AK"
            "&Signature=zz%3D&Expires=1' for reading",
            "Opening 'seg_00001.ts' for reading",
        ),
        (  # a temporary key's session token alone is a credential too
            "GET https://cdn.example/x/poster.jpg?X-Amz-Security-Token=FQo: 404",
            "GET poster.jpg: 404",
        ),
    ],
)
def test_signed_urls_become_their_objects_base_names(message, expected):
    assert public_text(message, roots=[], private_urls=[]) == expected


def test_urls_on_the_private_bucket_endpoint_become_base_names():
    message = "cannot read http://seaweedfs:8333/videos/media/hls/ab12/master.m3u8, nor http://seaweedfs:8333"
    text = public_text(message, roots=[], private_urls=["http://seaweedfs:8333/"])
    assert text == f"cannot read master.m3u8, nor {PLACEHOLDER}"


def test_public_urls_without_a_signature_are_kept():
    message = "see https://example.com/docs?page=2 and http://cdn.example/hls/ab12/master.m3u8"
    assert public_text(message, roots=[], private_urls=["http://seaweedfs:8333"]) == message
