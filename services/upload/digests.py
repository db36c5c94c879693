"""What a stored chunk's bytes are known by (`algorithm:hex`), and the chunk sha256 a client
may send to have a chunk checked as it arrives.

Every chunk row keeps a digest of its bytes. It is what a resend is compared with: the same
bytes are answered as a duplicate, other bytes with a 409, and the first copy is kept either
way. So the digest only has to tell two copies of one chunk apart, never to resist a forger
(a client that forges a collision fools only itself, and changes nothing on disk). New rows
use xxh3-128 (the `xxhash` package), at about 0.01 CPU-s per GiB against sha256's 0.53 on this
machine: sha256 per chunk, beside the whole file's sha256 (hashing.py), was a quarter of the
upload service's CPU.

Rows written before that hold `sha256:hex`; a resend of such a chunk is hashed with sha256 to
be compared. Integrity end to end stays sha256: the whole file's, declared at init and checked
at `complete`, and, per chunk, a sha256 the client sends (RFC 9530 `Content-Digest:
sha-256=:base64:` on a raw body, or a `sha256` form field before the file), checked before the
chunk counts.
"""

import base64
import binascii
import hashlib
import re
from typing import Any

import xxhash

from services.core.errors import InvalidInput

FAST = "xxh3-128"
SHA256 = "sha256"
_MAKERS: dict[str, Any] = {FAST: xxhash.xxh3_128, SHA256: hashlib.sha256}
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
# One member of a Content-Digest dictionary: `algorithm=:base64:` (RFC 9530, RFC 8941 bytes).
_MEMBER = re.compile(r"\s*([a-z0-9-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*")
MAX_HEADER = 1024

Hasher = Any  # hashlib's and xxhash's objects share update/hexdigest, with no public type


def new(algorithm: str = FAST) -> Hasher:
    """A fresh hasher for `algorithm` (FAST or SHA256)."""
    return _MAKERS[algorithm]()


def stored(algorithm: str, hexdigest: str) -> str:
    """The `algorithm:hex` a chunk row keeps."""
    return f"{algorithm}:{hexdigest}"


def algorithm_of(digest: str) -> str:
    """The algorithm a stored digest was made with (rows from before the prefix: sha256)."""
    algorithm, sep, _ = digest.partition(":")
    return algorithm if sep and algorithm in _MAKERS else SHA256


def hex_sha256(value: str | None, what: str) -> str | None:
    """A sha256 given as 64 hex characters (a form field), checked and lower-cased; None when
    absent. `what` says whose: the message names it."""
    if value is None:
        return None
    text = value.strip().lower()
    if not HEX_SHA256.fullmatch(text):
        raise InvalidInput(f"sha256 must be 64 hex characters ({what})")
    return text


def content_digest_sha256(header: str | None) -> str | None:
    """The sha-256 of a raw body's `Content-Digest` header (RFC 9530) as hex; None without
    the header. A header that names no sha-256 is refused: a client that asked for a check
    must not be answered as if its bytes had been checked."""
    if header is None:
        return None
    if len(header) > MAX_HEADER:
        raise InvalidInput(f"Content-Digest is over {MAX_HEADER} characters")
    algorithms = []
    for member in header.split(","):
        match = _MEMBER.fullmatch(member)
        if match is None:
            raise InvalidInput(
                "Content-Digest must look like sha-256=:BASE64: (RFC 9530), "
                f"not {member.strip()[:40]!r}"
            )
        algorithm, value = match.group(1), match.group(2)
        algorithms.append(algorithm)
        if algorithm != "sha-256":
            continue
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != 32:
            raise InvalidInput("Content-Digest's sha-256 must be 32 bytes in base64")
        return raw.hex()
    raise InvalidInput(
        f"Content-Digest names {', '.join(algorithms)[:80]}; the chunk can be checked "
        "against sha-256 only"
    )
