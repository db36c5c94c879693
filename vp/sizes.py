"""Byte counts as people write them on a command line: `65536`, `256K`, `8M`, `1.5G`."""

import re

from vp.errors import CliError

UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMG]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str, *, what: str) -> int:
    """`text` in bytes (K, M, G are powers of 1024; `KiB`, `MB` read the same); at least 1."""
    match = SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise CliError(f"{what} must be a size such as 65536, 256K or 8M, not {text!r}")
    count = int(float(match.group(1)) * UNITS[match.group(2).upper()])
    if count < 1:
        raise CliError(f"{what} must be at least one byte, not {text!r}")
    return count
