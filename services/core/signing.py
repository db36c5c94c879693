"""Private playback: signed, expiring tokens per video (HMAC-SHA256 over id and expiry).

A token is `<expires unix seconds>.<hex signature>`; it opens every playlist and segment of
one video until it expires. The streaming service appends it to the URIs inside the
playlists it serves, so a player needs nothing but the signed master URL.
"""

import hashlib
import hmac
import re
import time

TOKEN_RE = re.compile(r"([0-9]{1,12})\.([0-9a-f]{64})")


def _signature(key: str, video_id: str, expires: int) -> str:
    message = f"{video_id}:{expires}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(key: str, video_id: str, ttl_seconds: int, *, now: float | None = None) -> str:
    """A token for `video_id` valid for `ttl_seconds`."""
    expires = int((now if now is not None else time.time()) + ttl_seconds)
    return f"{expires}.{_signature(key, video_id, expires)}"


def verify(key: str, video_id: str, token: str | None, *, now: float | None = None) -> bool:
    """Whether `token` opens `video_id` now (constant-time signature comparison)."""
    match = TOKEN_RE.fullmatch(token or "")
    if match is None:
        return False
    expires = int(match.group(1))
    if expires < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(match.group(2), _signature(key, video_id, expires))


_URI_ATTRIBUTE = re.compile(r'URI="([^"?]+)"')


def add_token_to_playlist(text: str, token: str) -> str:
    """Append `?token=` to every URI of a playlist (media lines and URI="..." attributes)."""
    lines = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            line = f"{line}?token={token}"
        elif 'URI="' in line:
            line = _URI_ATTRIBUTE.sub(lambda m: f'URI="{m.group(1)}?token={token}"', line)
        lines.append(line)
    return "\n".join(lines) + "\n"
