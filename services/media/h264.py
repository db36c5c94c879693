"""The H.264 sequence parameter set (ITU-T H.264, 7.3.2.1.1), read far enough for what a
master playlist declares of a rung: its coded picture size after cropping and its frame rate
(the VUI's timing). Read in Python so the first master, written as the opening chunk is
published, starts no process per rung; a stream this does not describe is left to ffprobe.
"""

from dataclasses import dataclass

SPS_NAL_TYPE = 7
# Profiles whose SPS carries chroma format, bit depths and scaling matrices (7.3.2.1.1).
_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
# A frame rate above this is a clock, not a rate (and a wrong reading): ffprobe decides.
MAX_FPS = 240.0


class SpsError(ValueError):
    """The bytes are not an SPS this reader can follow to its timing."""


@dataclass(frozen=True)
class Sps:
    width: int
    height: int
    fps: float | None  # None: the VUI says no timing


class _Bits:
    """An RBSP read bit by bit, MSB first."""

    def __init__(self, rbsp: bytes) -> None:
        self.value = int.from_bytes(rbsp, "big")
        self.left = len(rbsp) * 8

    def u(self, count: int) -> int:
        if count > self.left:
            raise SpsError("the SPS ends early")
        self.left -= count
        return (self.value >> self.left) & ((1 << count) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise SpsError("an Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)


def _rbsp(nal: bytes) -> bytes:
    """The NAL unit's payload with its emulation-prevention bytes (00 00 03) taken out."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def find_sps(annexb: bytes) -> bytes:
    """The first SPS NAL unit (header byte included) in an Annex-B byte stream."""
    start = annexb.find(b"\x00\x00\x01")
    while start != -1 and start + 3 < len(annexb):
        if annexb[start + 3] & 0x1F == SPS_NAL_TYPE:
            end = annexb.find(b"\x00\x00\x01", start + 3)
            nal = annexb[start + 3 : end if end != -1 else len(annexb)]
            return nal.rstrip(b"\x00")  # a 4-byte start code's leading zero
        start = annexb.find(b"\x00\x00\x01", start + 3)
    raise SpsError("no sequence parameter set (SPS) in the H.264 stream")


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last + bits.se() + 256) % 256
        last = next_scale or last


def parse_sps(nal: bytes) -> Sps:
    """Picture size and frame rate from an SPS NAL unit (its header byte first)."""
    bits = _Bits(_rbsp(nal[1:]))
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    chroma = 1
    separate_planes = 0
    if profile in _HIGH_PROFILES:
        chroma = bits.ue()
        if chroma > 3:
            raise SpsError(f"chroma_format_idc {chroma}")
        if chroma == 3:
            separate_planes = bits.u(1)
        bits.ue(), bits.ue()  # bit depths
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    elif poc_type != 2:
        raise SpsError(f"pic_order_cnt_type {poc_type}")
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue()) if bits.u(1) else (0, 0, 0, 0)
    # Crop units (7-19 .. 7-22): chroma subsampling, and fields count twice in height.
    array_type = 0 if separate_planes else chroma
    sub_width, sub_height = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[array_type]
    unit_x, unit_y = sub_width, sub_height * (2 - frame_mbs_only)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise SpsError(f"a {width}x{height} picture")
    return Sps(width, height, _vui_fps(bits) if bits.u(1) else None)


def _vui_fps(bits: _Bits) -> float | None:
    """The frame rate in the VUI's timing info (E.1.1): time_scale / (2 num_units_in_tick)."""
    if bits.u(1) and bits.u(8) == 255:  # aspect_ratio_idc Extended_SAR
        bits.u(32)
    if bits.u(1):  # overscan_info_present_flag
        bits.u(1)
    if bits.u(1):  # video_signal_type_present_flag
        bits.u(4)
        if bits.u(1):
            bits.u(24)
    if bits.u(1):  # chroma_loc_info_present_flag
        bits.ue(), bits.ue()
    if not bits.u(1):  # timing_info_present_flag
        return None
    ticks, scale = bits.u(32), bits.u(32)
    if not ticks or not scale:
        return None
    return scale / (2 * ticks)
