"""MPEG-TS read in Python, as far as measuring our own segments needs: where each video
PES starts and whether it is a keyframe (for I-frame playlists), the first access unit's
parameter sets (for CODECS and the picture size), and the streams the program map lists.
Each is read as the segment is published, without a process per segment; a file not laid out
as the muxer writes it reads as None, and the caller asks ffprobe instead.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VideoUnit:
    """Where one video PES starts in an MPEG-TS file, whether it is a keyframe, its PTS (s)."""

    offset: int
    key: bool
    pts: float | None


TS_PACKET = 188
# Enough for the first PES's headers and parameter sets (they come first in an IDR access
# unit), far from a whole segment.
_TS_HEAD_BYTES = 64 * TS_PACKET


@dataclass(frozen=True)
class _Packet:
    offset: int
    pid: int
    unit_start: bool
    random_access: bool
    payload: memoryview


def _ts_packets(data: bytes, *, unit_starts: bool = False) -> Iterator[_Packet] | None:
    """The packets of an MPEG-TS byte string that carry a payload (with `unit_starts`, only
    those that start a PES or a section); None when `data` is not whole 188-byte packets
    each starting with the sync byte."""
    if not data or len(data) % TS_PACKET or data[::TS_PACKET].strip(_SYNC):
        return None
    if not unit_starts:
        return _packets(data, range(0, len(data), TS_PACKET))
    return _packets(data, _unit_start_offsets(data))


_SYNC = b"\x47"
# Each packet's second byte mapped to 1 where its payload_unit_start_indicator (0x40) is
# set: the flags of every packet in one C-speed pass, searched with bytes.find.
_UNIT_START = bytes(1 if byte & 0x40 else 0 for byte in range(256))


def _unit_start_offsets(data: bytes) -> Iterator[int]:
    """Where the packets that start a unit lie: a segment has thousands of packets and
    one in tens starts a unit, so the rest are never looked at one by one in Python."""
    flags = data[1::TS_PACKET].translate(_UNIT_START)
    index = flags.find(1)
    while index != -1:
        yield index * TS_PACKET
        index = flags.find(1, index + 1)


def _packets(data: bytes, offsets: Iterable[int]) -> Iterator[_Packet]:
    view = memoryview(data)
    for at in offsets:
        header = data[at + 1 : at + 4]
        control = (header[2] >> 4) & 0x3
        start = 4
        random_access = False
        if control & 0x2:  # an adaptation field comes first
            length = data[at + 4]
            random_access = length > 0 and bool(data[at + 5] & 0x40)
            start += 1 + length
        if not control & 0x1 or start >= TS_PACKET:
            continue  # no payload
        pid = ((header[0] & 0x1F) << 8) | header[1]
        yield _Packet(
            at, pid, bool(header[0] & 0x40), random_access, view[at + start : at + TS_PACKET]
        )


def _pes_video(body: bytes) -> bool:
    """Whether a payload that starts a unit starts a video PES (stream id 0xE0-0xEF)."""
    return len(body) > 8 and body[:3] == b"\x00\x00\x01" and 0xE0 <= body[3] <= 0xEF


def _pes_pts(body: bytes) -> float | None:
    """The PTS (s) in a PES header, None when it has none."""
    if len(body) < 14 or not body[7] & 0x80:
        return None
    b = body[9:14]
    ticks = ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1
    return ticks / 90000


def ts_video_units(data: bytes) -> list[VideoUnit] | None:
    """Every video PES of the first video stream in an MPEG-TS file: where it starts,
    whether its packet says random access (the muxer sets it on keyframes), its PTS;
    None when `data` is not MPEG-TS as the muxer writes it or holds no video PES."""
    packets = _ts_packets(data, unit_starts=True)
    if packets is None:
        return None
    video_pid: int | None = None
    units = []
    for packet in packets:
        if not packet.unit_start or (video_pid is not None and packet.pid != video_pid):
            continue
        body = bytes(packet.payload[:14])
        if video_pid is None:
            if not _pes_video(body):
                continue
            video_pid = packet.pid
        units.append(VideoUnit(packet.offset, packet.random_access, _pes_pts(body)))
    return units or None


def read_head(segment: Path) -> bytes | None:
    """The first _TS_HEAD_BYTES of a file, in whole packets: its PAT, PMT and the first
    PES's headers and parameter sets; None when it cannot be read."""
    try:
        with segment.open("rb") as file:
            data = file.read(_TS_HEAD_BYTES)
    except OSError:
        return None
    return data[: len(data) - len(data) % TS_PACKET]


def first_video_pes(head: bytes) -> bytes | None:
    """The start of the payload of the first video PES (stream id 0xE0-0xEF) in `head` (an
    MPEG-TS file's first packets), up to the next PES of that stream or the end of `head`;
    None when none is found."""
    packets = _ts_packets(head)
    if packets is None:
        return None
    video_pid: int | None = None
    payload = bytearray()
    for packet in packets:
        body = bytes(packet.payload)
        if video_pid is None:
            if not (packet.unit_start and _pes_video(body)):
                continue
            video_pid = packet.pid
            # The PES header: 9 bytes, then PES_header_data_length more.
            body = body[9 + body[8] :]
        elif packet.pid != video_pid:
            continue
        elif packet.unit_start:
            break  # the next access unit
        payload += body
    return bytes(payload) if video_pid is not None else None


# Stream types (ISO/IEC 13818-1, table 2-34) as the muxer writes them for our segments.
STREAM_H264, STREAM_HEVC, STREAM_AAC_ADTS = 0x1B, 0x24, 0x0F
_PAT_PID = 0


def _section(payload: bytes) -> bytes | None:
    """The PSI section a unit-start payload carries (after its pointer field), CRC cut off;
    None when it does not fit in this packet (our muxer's PAT and PMT always do)."""
    if not payload:
        return None
    body = payload[1 + payload[0] :]
    if len(body) < 3:
        return None
    length = ((body[1] & 0x0F) << 8) | body[2]
    if length < 9 or 3 + length > len(body):
        return None
    return body[: 3 + length - 4]


def stream_types(head: bytes) -> list[int] | None:
    """The stream type of every elementary stream the first program's map lists, in order;
    None when `head` (whole packets from the file's start) has no PAT and PMT to read."""
    packets = _ts_packets(head, unit_starts=True)
    if packets is None:
        return None
    pmt_pid: int | None = None
    for packet in packets:
        if not packet.unit_start or packet.pid not in (_PAT_PID, pmt_pid):
            continue
        section = _section(bytes(packet.payload))
        if section is None:
            return None
        if packet.pid == _PAT_PID and section[0] == 0x00:
            # Programs from byte 8, 4 bytes each: number, then the PMT's PID (0: the NIT).
            for at in range(8, len(section) - 3, 4):
                if (section[at] << 8) | section[at + 1]:
                    pmt_pid = ((section[at + 2] & 0x1F) << 8) | section[at + 3]
                    break
        elif packet.pid == pmt_pid and section[0] == 0x02:
            at = 12 + (((section[10] & 0x0F) << 8) | section[11])  # after program_info
            types = []
            while at + 5 <= len(section):
                types.append(section[at])
                at += 5 + (((section[at + 3] & 0x0F) << 8) | section[at + 4])
            return types
    return None
