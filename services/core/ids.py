"""Formats of every identifier that reaches a path, and their validation."""

import re
import uuid

from services.core.errors import InvalidInput

VIDEO_ID_RE = re.compile(r"[0-9a-f]{32}")
# A video rung (`720p`) or the audio rendition.
QUALITY_RE = re.compile(r"[0-9]{3,4}p|audio")
# What a rendition folder serves: segments, an fMP4 init segment, its I-frame playlist.
SEGMENT_RE = re.compile(r"seg_[0-9]{5}\.(ts|m4s)|init\.mp4|iframes\.m3u8")


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
