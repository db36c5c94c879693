"""Formats of every identifier that reaches a path, and their validation (the names of
files, and the patterns that check them, are services.core.layout's)."""

import re
import uuid

from services.core.errors import InvalidInput

VIDEO_ID_RE = re.compile(r"[0-9a-f]{32}")
# A video rung (`720p`) or the audio rendition.
QUALITY_RE = re.compile(r"[0-9]{3,4}p|audio")
# A caption (a video's subtitle track). (File names: services.core.layout.)
CAPTION_ID_RE = re.compile(r"[0-9a-f]{16}")


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
