"""What every backend accepts as a key or a prefix, checked the same way by all of them, before
a key becomes a path or an object name.

A key is relative and '/'-separated: no leading '/', no empty, '.' or '..' part, no backslash,
no control character, at most 1024 bytes (S3's limit). A prefix is the same with a trailing '/'.
"""

import re

from services.core.errors import InvalidInput

# S3 refuses longer object names; a file system refuses longer paths well before.
MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidKey(InvalidInput, ValueError):
    """A key or prefix no backend accepts (an absolute path, '..', a NUL byte, ...)."""

    code = "invalid_key"


def check_key(key: str) -> str:
    """`key` when it is a valid key, else InvalidKey saying why."""
    _check_text(key, "key")
    if key.endswith("/"):
        raise InvalidKey(f"key {_shown(key)} ends with '/': that names a folder, not an object")
    _check_parts(key, key.split("/"), "key")
    return key


def check_prefix(prefix: str) -> str:
    """`prefix` when it is a valid prefix (a key's leading folders, ending in '/')."""
    _check_text(prefix, "prefix")
    if not prefix.endswith("/"):
        raise InvalidKey(f"prefix {_shown(prefix)} must end with '/'")
    _check_parts(prefix, prefix[:-1].split("/"), "prefix")
    return prefix


def _check_text(text: str, what: str) -> None:
    if not text:
        raise InvalidKey(f"empty {what}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} {_shown(text)} is longer than {MAX_KEY_BYTES} bytes")
    if text.startswith("/"):
        raise InvalidKey(f"{what} {_shown(text)} is absolute: keys are relative")
    if "\\" in text or _CONTROL.search(text):
        raise InvalidKey(f"{what} {_shown(text)} holds a backslash or a control character")


def _check_parts(text: str, parts: list[str], what: str) -> None:
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidKey(f"{what} {_shown(text)} has an empty, '.' or '..' part")


def _shown(text: str) -> str:
    """The text as a message may quote it: short, control characters escaped."""
    return repr(text[:80])
