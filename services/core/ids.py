"""Formats of every identifier that reaches a path, and their validation."""

import re
import uuid

from services.core.errors import InvalidInput

VIDEO_ID_RE = re.compile(r"[0-9a-f]{32}")
# A video rung (`720p`) or the audio rendition.
QUALITY_RE = re.compile(r"[0-9]{3,4}p|audio")
# What a rendition folder serves: segments, an fMP4 init segment, its I-frame playlist.
SEGMENT_RE = re.compile(r"seg_[0-9]{5}\.(ts|m4s)|init\.mp4|iframes\.m3u8")
# A caption (a video's subtitle track) and the files of its HLS rendition.
CAPTION_ID_RE = re.compile(r"[0-9a-f]{16}")
CAPTION_FILE_RE = re.compile(r"playlist\.m3u8|seg_[0-9]{5}\.vtt")


def new_video_id() -> str:
    """A fresh video id: 32 lowercase hex characters (also the upload id)."""
    return uuid.uuid4().hex


def video_id(value: str) -> str:
    """Return `value` if it is a well-formed video id, else raise InvalidInput."""
    if not VIDEO_ID_RE.fullmatch(value):
        raise InvalidInput(
            f"'{value[:64]}' is not a video id: expected 32 lowercase hex characters"
        )
    return value


def quality(value: str) -> str:
    """Return `value` if it looks like a rung name such as `720p`."""
    if not QUALITY_RE.fullmatch(value):
        raise InvalidInput(
            f"'{value[:64]}' is not a quality: expected a rung name like 720p, or audio"
        )
    return value


def segment(value: str) -> str:
    """Return `value` if it is a segment name the platform produces (`seg_00001.ts`)."""
    if not SEGMENT_RE.fullmatch(value):
        raise InvalidInput(
            f"'{value[:64]}' is not a segment name: "
            "expected seg_NNNNN.ts, seg_NNNNN.m4s, init.mp4 or iframes.m3u8"
        )
    return value


def new_caption_id() -> str:
    """A fresh caption id: 16 lowercase hex characters."""
    return uuid.uuid4().hex[:16]


def caption_id(value: str) -> str:
    """Return `value` if it is a well-formed caption id, else raise InvalidInput."""
    if not CAPTION_ID_RE.fullmatch(value):
        raise InvalidInput(
            f"'{value[:64]}' is not a caption id: expected 16 lowercase hex characters"
        )
    return value


def caption_file(value: str) -> str:
    """Return `value` if it names a file of a caption's rendition (`seg_00001.vtt`)."""
    if not CAPTION_FILE_RE.fullmatch(value):
        raise InvalidInput(
            f"'{value[:64]}' is not a caption file: expected playlist.m3u8 or seg_NNNNN.vtt"
        )
    return value
