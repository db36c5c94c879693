"""Reading fragmented MP4 (the HEVC ladder's segments): boxes, the codec string, init segments.

Only what publishing needs, from the ISO base media file format (ISO/IEC 14496-12) and the
HEVC file format (ISO/IEC 14496-15): walk boxes, read the `hvcC` record an init segment
carries, and tell whether two init segments are interchangeable.

Every chunk of an fMP4 rung is encoded by its own ffmpeg run, which writes its own init
segment. The stitched playlist names one (`EXT-X-MAP`), so all of them must describe the
same stream: same track, timescale, edit list and decoder configuration. `publish_init`
checks that and publishes the first as the rung's `init.mp4`.
"""

import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.core.storage import write_atomic

# Boxes that hold only other boxes, on the way to a sample entry.
_CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl"})
# An stsd box: version/flags and entry count before its sample entries.
_STSD_HEADER = 8
# A VisualSampleEntry's fixed fields before its child boxes (ISO/IEC 14496-12, 12.1.3).
_VISUAL_ENTRY_FIELDS = 78
_SAMPLE_ENTRY_PATH = ("moov", "trak", "mdia", "minf", "stbl", "stsd")
# The general profile space as RFC 6381 / ISO/IEC 14496-15 (E.3) writes it before the idc.
_PROFILE_SPACES = ("", "A", "B", "C")


class Fmp4Error(ValueError):
    """An fMP4 file is truncated, malformed, or not what publishing expects."""


@dataclass(frozen=True)
class Box:
    """One box: its four-character type and where its header and body lie in the data."""

    type: str
    start: int
    body: int
    end: int


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes laid one after another in `data[start:end]`; Fmp4Error if one is cut short."""
    end = len(data) if end is None else end
    offset = start
    while offset < end:
        if end - offset < 8:
            raise Fmp4Error(f"a box header is cut short at byte {offset}")
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if end - offset < 16:
                raise Fmp4Error(f"a box header is cut short at byte {offset}")
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:  # the box runs to the end of the file
            size = end - offset
        if size < header or offset + size > end:
            raise Fmp4Error(f"box {kind!r} at byte {offset} claims {size} bytes; it is cut short")
        yield Box(kind.decode("latin-1"), offset, offset + header, offset + size)
        offset += size


def find(data: bytes, path: Sequence[str]) -> Box | None:
    """The first box at `path` (types from the top level down), or None."""
    start, end = 0, len(data)
    found: Box | None = None
    for kind in path:
        found = next((b for b in boxes(data, start, end) if b.type == kind), None)
        if found is None:
            return None
        start, end = found.body, found.end
    return found


def hvcc_record(init: bytes) -> bytes:
    """The HEVCDecoderConfigurationRecord of an init segment's `hvc1`/`hev1` sample entry."""
    stsd = find(init, _SAMPLE_ENTRY_PATH)
    if stsd is None:
        raise Fmp4Error("no sample description (moov/trak/mdia/minf/stbl/stsd)")
    entry = next(boxes(init, stsd.body + _STSD_HEADER, stsd.end), None)
    if entry is None or entry.type not in ("hvc1", "hev1"):
        raise Fmp4Error(f"the sample entry is {entry.type if entry else 'missing'}, not hvc1")
    children = boxes(init, entry.body + _VISUAL_ENTRY_FIELDS, entry.end)
    config = next((b for b in children if b.type == "hvcC"), None)
    if config is None:
        raise Fmp4Error("the hvc1 sample entry has no hvcC box")
    return init[config.body : config.end]


def hvc1_codec(record: bytes, *, fourcc: str = "hvc1") -> str:
    """The CODECS string (ISO/IEC 14496-15 E.3) of an HEVCDecoderConfigurationRecord.

    `hvc1.{space}{profile}.{compatibility}.{tier}{level}.{constraints}`: the profile idc in
    decimal; the 32 compatibility flags bit-reversed, in hex; L or H and the level idc in
    decimal; then the six constraint bytes in hex, trailing zero bytes left out.
    """
    if len(record) < 13 or record[0] != 1:
        raise Fmp4Error("not an HEVCDecoderConfigurationRecord (version 1)")
    space, tier, profile = record[1] >> 6, (record[1] >> 5) & 1, record[1] & 0x1F
    (compatibility,) = struct.unpack_from(">I", record, 2)
    reversed_flags = int(f"{compatibility:032b}"[::-1], 2)
    constraints = list(record[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    fields = [fourcc, f"{_PROFILE_SPACES[space]}{profile}", f"{reversed_flags:X}"]
    fields.append(f"{'LH'[tier]}{record[12]}")
    fields += [f"{byte:02X}" for byte in constraints]
    return ".".join(fields)


def init_codec(path: Path) -> str:
    """The CODECS string of the HEVC track described by the init segment at `path`."""
    return hvc1_codec(hvcc_record(_read(path)))


def essentials(init: bytes) -> bytes:
    """What a player reads from an init segment: every box, but `moov/udta` (muxer tags).

    Two init segments with the same essentials are interchangeable: same file type, track,
    timescale, edit list and decoder configuration.
    """
    top = list(boxes(init))
    if not any(box.type == "moov" for box in top):
        raise Fmp4Error("an init segment without a moov box")
    kept = []
    for box in top:
        if box.type != "moov":
            kept.append(init[box.start : box.end])
            continue
        kept += [init[b.start : b.end] for b in boxes(init, box.body, box.end) if b.type != "udta"]
    return b"".join(kept)


def publish_init(folder: Path, sources: Sequence[str], *, name: str, check: bool = True) -> None:
    """Publish `folder/sources[0]` as `folder/name` (once); with `check`, first make sure
    every init segment in `sources` is interchangeable with it (Fmp4Error names the one
    that is not)."""
    target = folder / name

    def published() -> bytes | None:
        return _read(target) if target.exists() else None

    publish_init_with(
        InitFiles(
            read=lambda source: _read(folder / source),
            published=published,
            write=lambda data: write_atomic(target, data),
            where=str(folder),
        ),
        sources,
        name=name,
        check=check,
    )


@dataclass(frozen=True)
class InitFiles:
    """How `publish_init_with` reads a rung's init segments and writes the published one
    (files of a folder, or objects of a bucket)."""

    read: Callable[[str], bytes]  # a chunk's init segment by name (Fmp4Error if unreadable)
    published: Callable[[], bytes | None]  # the published one, None when there is none yet
    write: Callable[[bytes], None]  # publish it, atomically
    where: str  # the rung, as errors name it


def publish_init_with(
    files: InitFiles, sources: Sequence[str], *, name: str, check: bool = True
) -> None:
    """`publish_init` on `files`: publish `sources[0]` as `name` (once), checking with
    `check` that every one of `sources` is interchangeable with it."""
    if not sources:
        raise Fmp4Error(f"{files.where}: no init segment to publish")
    expected_data = files.published()
    if expected_data is None:
        expected_data = files.read(sources[0])
        essentials(expected_data)  # refuse to publish a truncated one
        files.write(expected_data)
    if not check:
        return
    expected = essentials(expected_data)
    for source in sources:
        if essentials(files.read(source)) != expected:
            raise Fmp4Error(
                f"{files.where}/{source} differs from {files.where}/{name}: the chunks were "
                "encoded with different encoder settings or ffmpeg versions; start the video over"
            )


@contextmanager
def joined(init: Path, segment: Path) -> Iterator[Path]:
    """A temporary file beside `segment` holding `init` + `segment`: what a player decodes
    (a media segment alone has no codec configuration for ffprobe to read)."""
    with tempfile.NamedTemporaryFile(
        dir=segment.parent, prefix=".probe-", suffix=".mp4", delete=False
    ) as handle:
        handle.write(_read(init) + _read(segment))
    path = Path(handle.name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise Fmp4Error(f"{path}: {exc.strerror or exc}") from exc
