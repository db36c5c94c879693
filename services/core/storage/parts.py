"""AWS S3's rules for multipart objects, kept by every backend before it asks its server, so
that code tested on a lenient server (or the local folder) behaves the same on AWS."""

import base64
import hashlib
import itertools
from pathlib import Path

from services.core.errors import Conflict
from services.core.storage.interface import MAX_PARTS, MIN_PART_BYTES, Part

# md5 reads the part in pieces of this size: memory stays flat whatever the part's size.
HASH_PIECE_BYTES = 1024 * 1024


class PartRejected(Conflict):
    """A part breaks S3's rules (number, size) or is not the one stored (its ETag differs)."""

    code = "part_rejected"


def check_part_number(number: int) -> int:
    """`number` when S3 accepts it as a part number (1..MAX_PARTS)."""
    if not 1 <= number <= MAX_PARTS:
        raise PartRejected(f"part number {number} is outside 1..{MAX_PARTS}")
    return number


def check_parts(parts: list[Part]) -> list[Part]:
    """The parts in number order, once they obey S3's rules: at least one, no number twice,
    each but the last at least MIN_PART_BYTES."""
    if not parts:
        raise PartRejected("a multipart object needs at least one part")
    ordered = sorted(parts, key=lambda p: p.number)
    for before, after in itertools.pairwise(ordered):
        if before.number == after.number:
            raise PartRejected(f"part {before.number} is listed twice")
    for part in ordered:
        check_part_number(part.number)
    for part in ordered[:-1]:
        if part.size < MIN_PART_BYTES:
            raise PartRejected(
                f"part {part.number} holds {part.size} bytes: every part but the last needs "
                f"at least {MIN_PART_BYTES}"
            )
    return ordered


def file_md5(path: Path) -> bytes:
    """The md5 digest of a file's bytes (an S3 part's ETag), read in pieces."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while piece := handle.read(HASH_PIECE_BYTES):
            digest.update(piece)
    return digest.digest()


def content_md5(digest: bytes) -> str:
    """The Content-MD5 header of bytes whose md5 digest is `digest` (base64, not hex)."""
    return base64.b64encode(digest).decode("ascii")


def bare_etag(etag: str) -> str:
    """An ETag without the quotes S3 puts around it."""
    return etag.strip('"')
