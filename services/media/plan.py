"""A job's plan: what the source is, which rungs, how it is cut into units of work. Stored as
JSON on the job row so every worker, on any machine, encodes its chunk the same way. Made at
`complete` (the upload service has just probed the source) or by a worker when a job is
started over."""

from dataclasses import asdict, dataclass, replace
from typing import Any

from services.core import layout
from services.core.jobs import CAPTIONS, ChunkSpec
from services.core.settings import Settings
from services.media.bounds import check_source
from services.media.chunking import split_chunks
from services.media.ffmpeg_args import (
    CODECS,
    FIXED,
    H264,
    HEVC,
    MAX_AUDIO_KBPS,
    EncodeOptions,
    audio_bitrate,
)
from services.media.ladder import Rendition, plan_ladder
from services.media.probe import SourceInfo

AUDIO_INDEX = -1
# The unit that extracts the source's text subtitle streams as captions (kind "captions").
CAPTIONS_INDEX = -2
# HEVC needs about 60 % of H.264's bits for the same picture (the common rule of thumb for
# x265 against x264 at web bit rates): its rungs keep the sizes and get 60 % of the rates.
HEVC_BITRATE_SHARE = 0.6
# An audio-only source gets the best audio any video's ladder gives (the HLS spec's ceiling):
# with no picture the sound is all there is, and 160 kb/s is still a podcast's small change.
AUDIO_ONLY_KBPS = MAX_AUDIO_KBPS
# The HEVC ladder's shortest opening (see codec_opening_seconds).
HEVC_MIN_OPENING_SECONDS = 1.0


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to encode any chunk of a job."""

    info: SourceInfo
    renditions: list[Rendition]
    options: EncodeOptions
    audio_kbps: int | None

    @property
    def duration(self) -> float:
        return self.info.duration

    @property
    def audio_only(self) -> bool:
        """True for a source with no picture: no rungs, no time chunks, only the audio."""
        return not self.info.has_video

    @property
    def qualities(self) -> list[str]:
        """What a finished video offers: its rungs, highest first, or "audio" alone."""
        return [layout.AUDIO] if self.audio_only else [r.name for r in self.renditions]

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": asdict(self.info),
            "renditions": [asdict(r) for r in self.renditions],
            "options": asdict(self.options),
            "audio_kbps": self.audio_kbps,
            "duration": self.info.duration,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        return cls(
            info=SourceInfo(**data["info"]),
            renditions=[Rendition(**r) for r in data["renditions"]],
            options=EncodeOptions(**data["options"]),
            audio_kbps=data["audio_kbps"],
        )


def encode_options(settings: Settings, codec: str | None = None) -> EncodeOptions:
    """The encoder knobs from the settings, for `codec` (default: DEFAULT_CODEC)."""
    codec = codec or settings.default_codec
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}: expected one of {', '.join(CODECS)}")
    ultrafast = settings.x264_preset == "ultrafast"
    return EncodeOptions(
        preset=settings.x264_preset,
        x264_params=settings.x264_params,
        x264_lower_params=settings.x264_lower_params,
        segment_seconds=settings.segment_seconds,
        keyframe_seconds=settings.keyframe_seconds,
        threads=settings.ffmpeg_threads,
        codec=codec,
        x265_preset=settings.x265_preset,
        opening_seconds=codec_opening_seconds(settings.opening_seconds, codec),
        # An ultrafast ladder's profile is ultrafast's own (see Settings): the opening follows.
        opening_preset=settings.x264_preset if ultrafast else settings.opening_x264_preset,
        opening_x264_params="" if ultrafast else settings.opening_x264_params,
        opening_crf=settings.opening_crf,
        # The HEVC ladder's rates stay fixed (x265's CRF scale is not x264's): its plan says so.
        rate_control=settings.rate_control if codec == H264 else FIXED,
        crf=settings.ladder_crf,
    )


def codec_opening_seconds(asked: float, codec: str) -> float:
    """The opening's length for a ladder in `codec`: OPENING_SECONDS, except that the HEVC
    ladder's opening is never shorter than HEVC_MIN_OPENING_SECONDS.

    x265 encodes the opening as the rest of its rung (an average bit rate, no budget of its
    own), and a shorter opening is a worse one: on the bench's noisy 1080p clip the opening
    came out 0.10 SSIM below the chunk after it at 1 s and 0.15 at 0.5 s (1080p; 720p 0.040
    and 0.060; the opening and the chunk after it each through video_chunk_command,
    SSIM against the source scaled to the rung). A capped CRF with a full buffer, as the H.264
    opening has, did not help x265 there (CRF 20: 0.16, CRF 24: 0.14 below), nor did any
    x265 rate-control or thread option tried (within 0.01 of each other), nor a slower
    preset (veryfast: 0.09 below). Frame by frame the opening's SSIM climbs from 0.65-0.75 to
    0.95 whatever it spends, where the chunk after it starts at 0.97: it follows the source,
    whose own encoder spent 27 Mb/s on its first half second and 3.7 on the next, so the
    gap is this clip's first second as much as x265's. Until that is known on other
    footage, the HEVC opening keeps the length it had."""
    if codec == HEVC and 0 < asked < HEVC_MIN_OPENING_SECONDS:
        return HEVC_MIN_OPENING_SECONDS
    return asked


def codec_renditions(renditions: list[Rendition], codec: str) -> list[Rendition]:
    """The ladder's renditions with the bit rates of `codec` (the ladder is H.264's)."""
    if codec != HEVC:
        return renditions
    return [
        replace(
            r,
            video_kbps=round(r.video_kbps * HEVC_BITRATE_SHARE),
            maxrate_kbps=round(r.maxrate_kbps * HEVC_BITRATE_SHARE),
            bufsize_kbps=round(r.bufsize_kbps * HEVC_BITRATE_SHARE),
        )
        for r in renditions
    ]


def make_plan(
    info: SourceInfo, settings: Settings, *, codec: str | None = None
) -> tuple[Plan, list[ChunkSpec]]:
    """The plan for a probed source and its units of work (the audio first, then chunks, then
    the extraction of its text subtitles as captions, when it has any).

    One ladder per video, in `codec` (default: DEFAULT_CODEC); an audio-only source has no
    ladder and one unit of work, its audio (`codec` then only decides the segment format).
    A source past the settings' bounds is refused (BeyondLimits) before anything is cut, so
    no claim makes planning slow.
    """
    check_source(info, settings)
    options = encode_options(settings, codec)
    # Claimed after the rest of the job's units (jobs.claim_chunk): never before chunk 0.
    captions = [ChunkSpec(CAPTIONS_INDEX, CAPTIONS, 0.0, None)] if info.text_subtitles else []
    if not info.has_video:
        plan = Plan(info=info, renditions=[], options=options, audio_kbps=AUDIO_ONLY_KBPS)
        return plan, [ChunkSpec(AUDIO_INDEX, "audio", 0.0, None), *captions]
    renditions = codec_renditions(plan_ladder(info.width, info.height), options.codec)
    plan = Plan(
        info=info,
        renditions=renditions,
        options=options,
        audio_kbps=audio_bitrate(renditions) if info.has_audio else None,
    )
    chunks = split_chunks(
        info.duration,
        segment_seconds=settings.segment_seconds,
        chunk_segments=settings.chunk_segments,
        first_chunk_segments=settings.first_chunk_segments,
        opening_seconds=options.opening_seconds,
    )
    specs = [ChunkSpec(c.index, "video", c.start, c.end) for c in chunks]
    if info.has_audio:
        specs.insert(0, ChunkSpec(AUDIO_INDEX, "audio", 0.0, None))
    return plan, [*specs, *captions]
