"""fMP4 reading: the box walk, the hvc1 CODECS string, init segments that must be alike."""

import struct
import subprocess
from pathlib import Path

import pytest

from services.media.fmp4 import (
    Fmp4Error,
    boxes,
    essentials,
    find,
    hvc1_codec,
    hvcc_record,
    init_codec,
    joined,
    publish_init,
)
from services.media.playlists import media_playlist, read_media_playlist


def box(kind: str, *children: bytes) -> bytes:
    body = b"".join(children)
    return struct.pack(">I4s", 8 + len(body), kind.encode()) + body


def record(
    *,
    space: int = 0,
    tier: int = 0,
    profile: int = 1,
    compatibility: int = 0x60000000,
    constraints: bytes = b"\x90\x00\x00\x00\x00\x00",
    level: int = 93,
) -> bytes:
    """The first 13 bytes of an HEVCDecoderConfigurationRecord (the rest is not read)."""
    first = (space << 6) | (tier << 5) | profile
    return bytes([1, first]) + struct.pack(">I", compatibility) + constraints + bytes([level])


def init_segment(config: bytes, *, tag: bytes = b"Lavf59", entry: str = "hvc1") -> bytes:
    """ftyp + moov/trak/.../stsd/hvc1/hvcC, and a udta with a muxer tag."""
    sample_entry = box(entry, bytes(78), box("hvcC", config))
    stsd = box("stsd", bytes(8), sample_entry)
    trak = box("trak", box("mdia", box("minf", box("stbl", stsd))))
    moov = box("moov", box("mvhd", bytes(100)), trak, box("udta", tag))
    return box("ftyp", b"iso5") + moov


# ---- the CODECS string -----------------------------------------------------------------


def test_main_profile_codecs_string() -> None:
    assert hvc1_codec(record()) == "hvc1.1.6.L93.90"


def test_compatibility_flags_are_bit_reversed_and_constraint_bytes_kept_in_order() -> None:
    # Main 10 (compatible with 2 only), high tier, level 5.1, progressive + non-packed +
    # frame-only and a flag in the third constraint byte: the zero byte between stays, the
    # trailing ones go.
    config = record(
        tier=1,
        profile=2,
        compatibility=0x20000000,
        constraints=bytes([0xB0, 0, 0x01, 0, 0, 0]),
        level=153,
    )
    assert hvc1_codec(config) == "hvc1.2.4.H153.B0.00.01"


def test_profile_space_is_a_letter_before_the_profile() -> None:
    assert hvc1_codec(record(space=1, constraints=bytes(6))) == "hvc1.A1.6.L93"


def test_a_record_that_is_not_version_1_is_refused() -> None:
    with pytest.raises(Fmp4Error):
        hvc1_codec(b"\x00" + record()[1:])
    with pytest.raises(Fmp4Error):
        hvc1_codec(record()[:12])


# ---- boxes -----------------------------------------------------------------------------


def test_the_hvcc_record_is_found_inside_the_sample_entry() -> None:
    assert hvcc_record(init_segment(record())) == record()
    assert find(init_segment(record()), ["moov", "udta"]) is not None


def test_an_audio_init_segment_has_no_hvc1_entry() -> None:
    with pytest.raises(Fmp4Error, match="mp4a"):
        hvcc_record(init_segment(record(), entry="mp4a"))


def test_a_box_cut_short_is_an_error_not_a_short_read() -> None:
    data = init_segment(record())
    with pytest.raises(Fmp4Error, match="cut short"):
        list(boxes(data[:-5]))
    with pytest.raises(Fmp4Error, match="cut short"):
        list(boxes(data + b"\x00\x00"))


def test_a_64_bit_box_size_is_read() -> None:
    body = b"payload"
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + len(body)) + body
    (found,) = boxes(large)
    assert (found.type, found.body, found.end) == ("mdat", 16, len(large))


# ---- init segments ---------------------------------------------------------------------


def test_init_segments_differing_only_in_muxer_tags_are_interchangeable() -> None:
    assert essentials(init_segment(record(), tag=b"Lavf59")) == essentials(
        init_segment(record(), tag=b"Lavf61")
    )
    assert essentials(init_segment(record())) != essentials(init_segment(record(level=120)))


def test_publish_init_copies_the_first_and_refuses_one_that_differs(tmp_path: Path) -> None:
    (tmp_path / "init_00000.mp4").write_bytes(init_segment(record()))
    (tmp_path / "init_00001.mp4").write_bytes(init_segment(record(), tag=b"other"))
    publish_init(tmp_path, ["init_00000.mp4", "init_00001.mp4"], name="init.mp4")
    assert (tmp_path / "init.mp4").read_bytes() == init_segment(record())
    (tmp_path / "init_00002.mp4").write_bytes(init_segment(record(level=120)))
    sources = ["init_00000.mp4", "init_00001.mp4", "init_00002.mp4"]
    with pytest.raises(Fmp4Error, match=r"init_00002\.mp4 differs"):
        publish_init(tmp_path, sources, name="init.mp4")
    publish_init(tmp_path, sources, name="init.mp4", check=False)


def test_a_truncated_init_segment_is_never_published(tmp_path: Path) -> None:
    (tmp_path / "init_00000.mp4").write_bytes(init_segment(record())[:40])
    with pytest.raises(Fmp4Error):
        publish_init(tmp_path, ["init_00000.mp4"], name="init.mp4")
    assert not (tmp_path / "init.mp4").exists()


def test_joined_file_is_removed_afterwards(tmp_path: Path) -> None:
    (tmp_path / "init.mp4").write_bytes(b"init")
    (tmp_path / "seg_00000.m4s").write_bytes(b"segment")
    with joined(tmp_path / "init.mp4", tmp_path / "seg_00000.m4s") as whole:
        assert whole.read_bytes() == b"initsegment"
        assert whole.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init.mp4", "seg_00000.m4s"]


def test_a_real_x265_init_segment_names_its_profile_and_level(tmp_path: Path) -> None:
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi"]
    argv += ["-i", "testsrc2=size=320x180:rate=30:duration=0.5"]
    argv += ["-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1"]
    argv += ["-x265-params", "log-level=error", "-f", "hls", "-hls_segment_type", "fmp4"]
    argv += [str(tmp_path / "out.m3u8")]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    # Main profile, level 2 (idc 60) for 320x180 at 30 fps.
    assert init_codec(tmp_path / "init.mp4") == "hvc1.1.6.L60.90"


# ---- media playlists -------------------------------------------------------------------


def test_an_fmp4_media_playlist_names_its_init_segment_once() -> None:
    segments = [("seg_00000.m4s", 2.0), ("seg_00001.m4s", 1.5)]
    text = media_playlist(segments, target=2, ended=True, init="init.mp4")
    lines = text.splitlines()
    assert "#EXT-X-VERSION:7" in lines
    assert lines.count('#EXT-X-MAP:URI="init.mp4"') == 1
    assert lines.index('#EXT-X-MAP:URI="init.mp4"') < lines.index("#EXTINF:2.000000,")


def test_an_mpegts_media_playlist_stays_version_3_without_a_map(tmp_path: Path) -> None:
    text = media_playlist([("seg_00000.ts", 2.0)], target=2, ended=True)
    assert "#EXT-X-VERSION:3" in text and "EXT-X-MAP" not in text
    (tmp_path / "p.m3u8").write_text(text)
    assert read_media_playlist(tmp_path / "p.m3u8") == [("seg_00000.ts", 2.0)]
