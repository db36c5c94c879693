"""The one settings object every service reads: environment variables (and `.env`) over defaults
that work on a laptop."""

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The shortest short opening (OPENING_SECONDS): a few frames at any common frame rate.
MIN_OPENING_SECONDS = 0.25
# One CSP source expression: *, 'none', 'self', a scheme (https:) or a host with an optional
# scheme and port (https://*.example.com:8443): never a ';' or ',' that would end the directive.
FRAME_SOURCE_RE = re.compile(
    r"\*|'none'|'self'|[a-z][a-z0-9+.-]*:"
    r"|([a-z][a-z0-9+.-]*://)?[A-Za-z0-9*.-]+(:([0-9]{1,5}|\*))?/?"
)


class Settings(BaseSettings):
    """Platform configuration; every field can be set as an upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    storage_dir: Path = Field(
        PROJECT_ROOT / "shared_storage", description="Root of originals/, hls/ and the SQLite file"
    )
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means SQLite at STORAGE_DIR/videos.db"
    )

    host: str = Field("127.0.0.1", description="Interface every service binds to")
    gateway_port: int = Field(8000, description="Port of the gateway (page + every API path)")
    upload_port: int = Field(8001, description="Port of the upload service")
    transcoding_port: int = Field(8002, description="Port of the transcoding service")
    metadata_port: int = Field(8003, description="Port of the metadata service")
    streaming_port: int = Field(8004, description="Port of the streaming service")
    admin_port: int = Field(8005, description="Port of the admin service")
    serve_connections: int = Field(
        4096,
        ge=128,
        le=65536,
        description="Connections each process of the streaming service and the gateway holds "
        "open at once (players keep theirs alive between segments); more wait in the listen "
        "backlog, of the same length",
    )
    upload_url: str = Field("", description="Base URL of the upload service; empty = host:port")
    transcoding_url: str = Field("", description="Base URL of the transcoding service")
    metadata_url: str = Field("", description="Base URL of the metadata service")
    streaming_url: str = Field("", description="Base URL of the streaming service")
    admin_url: str = Field("", description="Base URL of the admin service")

    max_upload_bytes: int = Field(64 * 1024**3, description="Largest accepted upload (bytes)")
    max_chunks: int = Field(100_000, description="Most chunks one upload may declare")
    max_chunk_bytes: int = Field(256 * 1024**2, description="Largest accepted single chunk")
    max_body_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="Largest JSON or form request body (chunks and tus bodies have their own)",
    )
    allowed_extensions: str = Field(
        "mp4,m4v,mov,mkv,webm,avi,mpg,mpeg,ts,mts,m2ts,flv,wmv,3gp,ogv,mxf,"
        "m4a,mp3,wav,flac,ogg,oga,opus,aac",
        description="Comma-separated video and audio file name endings accepted at init "
        "(content must probe too; audio-only files become audio-only HLS)",
    )
    # Bounds on what a source's header may claim (a 5 KB file can claim 10^12 s): generous
    # for anything a camera, phone or editor writes, refused with a 422 above them.
    max_duration_seconds: float = Field(
        12 * 3600, gt=0, description="Longest accepted video (seconds); longer ones are refused"
    )
    max_frame_pixels: int = Field(
        7680 * 4320, gt=0, description="Most pixels per frame accepted (default 8K: 7680x4320)"
    )
    max_frame_rate: float = Field(
        240, gt=0, description="Highest source frame rate accepted (frames per second)"
    )
    direct_io: bool = Field(
        True,
        description="Write upload chunks past the page cache (O_DIRECT) where the filesystem "
        "allows it: no copy of every byte into the cache (see services/upload/aligned.py)",
    )
    min_free_bytes: int = Field(
        1024**3, description="Uploads that would leave less free disk space are refused (507)"
    )

    caption_max_bytes: int = Field(
        2 * 1024**2, gt=0, description="Largest accepted caption file, WebVTT or SRT (bytes)"
    )
    caption_max_cues: int = Field(
        20_000, gt=0, description="Most cues one caption file may hold (a film has ~2,000)"
    )
    captions_per_video: int = Field(
        32, ge=1, description="Most captions a video may have, uploaded and embedded together"
    )

    upload_expiry_seconds: float = Field(
        24 * 3600, description="An upload with no chunk for this long is removed with its files"
    )
    tus_lock_wait_seconds: float = Field(
        3.0,
        ge=0,
        le=60,
        description="How long a tus PATCH waits for the upload's previous writer to finish "
        "(a client retrying right after a dropped connection) before answering 423",
    )
    sweep_interval_seconds: float = Field(
        3600, description="How often the upload service looks for abandoned uploads"
    )
    watch_folder_enabled: bool = Field(
        True, description="Pick up video and audio files dropped into STORAGE_DIR/incoming/"
    )
    watch_interval_seconds: float = Field(
        5.0, gt=0, description="Watch folder scan period; a file must stay unchanged for one"
    )

    ffmpeg_bin: str = Field("ffmpeg", description="ffmpeg executable")
    ffprobe_bin: str = Field("ffprobe", description="ffprobe executable")
    x264_preset: str = Field("veryfast", description="x264 preset (tests use ultrafast)")
    # Measured on 2 cores (scripts/bench.py ladder): over veryfast, a diamond motion search
    # everywhere and one subpixel refinement pass below the top rung cut the ladder's CPU by
    # 17 % for an SSIM 0.001 lower; the top rung, the one big screens see, keeps subme 2.
    x264_params: str = Field(
        "me=dia", description="x264 options (-x264-params) over the preset, top rung"
    )
    x264_lower_params: str = Field(
        "me=dia:subme=1", description="x264 options over the preset, rungs below the top"
    )
    default_codec: str = Field(
        "h264",
        pattern="^(h264|hevc)$",
        description="Ladder codec of an upload that does not choose one: h264 (MPEG-TS "
        "segments, plays everywhere) or hevc (H.265 in fMP4, ~40% fewer bits, slower)",
    )
    x265_preset: str = Field(
        "ultrafast",
        description="x265 preset of the HEVC ladder (ultrafast costs ~1.5x x264 veryfast)",
    )
    segment_seconds: int = Field(6, description="Target HLS segment duration")
    keyframe_seconds: int = Field(2, description="Forced IDR interval on every rung")
    ffmpeg_threads: int = Field(0, description="ffmpeg -threads (0 = ffmpeg decides)")
    encode_nice: int = Field(
        10,
        ge=0,
        le=19,
        description=(
            "How much lower than the servers' the encoders' CPU priority is (nice, 0-19): "
            "viewers and uploads on the same machine come first, and the encoders still "
            "take every core nothing else wants. 0: the same priority."
        ),
    )
    # Measured on 2 cores (scripts/bench.py ladder, 1080p30 source): first playable 2.0-2.5 s
    # with a 1 s opening, 7.4-7.8 s with none (a whole 6 s first chunk to encode first). The
    # opening's ffmpeg costs about 0.5 s to start plus 0.8 s per second of 1080p it encodes
    # (four rungs, on 2 cores), so half a second is played sooner by about half a second.
    opening_seconds: float = Field(
        0.5,
        ge=0,
        le=60,
        allow_inf_nan=False,
        description="The first segment's length in seconds (fractions allowed: 0.5) when "
        "shorter than SEGMENT_SECONDS: the opening is a chunk of its own, encoded in a second "
        "or so, so a video plays soon after its upload (0, or SEGMENT_SECONDS or more: no "
        f"short opening; otherwise at least {MIN_OPENING_SECONDS:g} s)",
    )
    opening_x264_preset: str = Field(
        "ultrafast", description="x264 preset of the short opening (its rungs encode at once)"
    )
    # ultrafast alone encodes Constrained Baseline (no CABAC, no 8x8 transform, no B-frames)
    # where the other presets encode High with B-frames. CABAC and the 8x8 transform keep the
    # opening in the High profile the rest of the rung declares (CODECS is read from its
    # first segment); B-frames as the ladder's presets make them keep the decoding times
    # rising from the opening into the next chunk (no B-frames: the next chunk's first DTS
    # would come a frame before the opening's last). They also buy back part of ultrafast's
    # quality for a few per cent more time. Adaptive quantisation (off in ultrafast) buys
    # the most of the rest: on the bench clip's opening second, SSIM 0.938/0.960/0.972/0.983
    # against 0.935/0.948/0.969/0.979 without it (1080p/720p/480p/360p), for no time to
    # measure; superfast gave 0.941/0.958/0.972/0.983 for about 0.2 s more. vbv-init=1
    # with OPENING_CRF 18: see EncodeOptions (the buffer, not the options, held 720p back);
    # beside them a lower CRF gains nothing, trellis=1 0.0005 on 720p for 0.2 s more, and
    # subme 1-4 lowers SSIM at the same CRF (fewer bits).
    opening_x264_params: str = Field(
        "cabac=1:8x8dct=1:bframes=3:b-adapt=1:aq-mode=1:aq-strength=1.3:vbv-init=1",
        description="x264 options over the opening's preset",
    )
    opening_crf: float = Field(
        18.0,
        ge=0,
        le=51,
        description="x264 CRF of the opening, capped by each rung's maxrate (a bit-rate target "
        "cannot settle within the opening's second or two)",
    )
    # Measured (scripts/bench_rate_control.py, the platform's own plan and commands): capped
    # CRF 18 took 0.78x the fixed ladder's bytes at an SSIM 0.0018 lower on camera footage
    # (bikes.mp4), and 0.97x at 0.0009 lower on the bench's noisy clip, which needs every
    # bit of each rung's cap. Not the default: 0.8x does not hold on the noisy clip, and on
    # a tiny clip (176x144) it kept SSIM 0.980 where the fixed ladder's 900 kb/s reached
    # 0.993: the CRF that matches a fixed ladder depends on the footage.
    rate_control: str = Field(
        "fixed",
        pattern="^(fixed|capped-crf)$",
        description="How the H.264 ladder spends bits: fixed (each rung's average bit rate) or "
        "capped-crf (constant quality LADDER_CRF, at most each rung's average bit rate: the "
        "same bytes on hard footage, fewer on easy footage). The HEVC ladder stays fixed",
    )
    ladder_crf: float = Field(
        18.0, ge=0, le=51, description="x264 CRF of the ladder when RATE_CONTROL=capped-crf"
    )
    chunk_segments: int = Field(3, ge=1, description="Segments per chunk (the unit of work)")
    first_chunk_segments: int = Field(
        1, ge=1, description="Segments in the first chunk (small: the first playable comes fast)"
    )
    chunk_runs: bool = Field(
        True,
        description="A video worker's ffmpeg runs on into the job's next chunk whenever it can "
        "claim that chunk as the run reaches it (each chunk is still checked, recorded and "
        "published on its own as its segments close): no start-up, drain or decoding up to a "
        "chunk's start at every boundary. A chunk another worker holds ends the run there",
    )

    workers: int = Field(
        1, description="Video workers inside the transcoding service (one fills a 2-core box)"
    )
    audio_workers: int = Field(
        1, description="Audio workers beside them (light: audio never waits behind video)"
    )
    lease_seconds: float = Field(15.0, description="A job's lease; an expired lease is re-claimed")
    migrate_on_start: bool = Field(
        True,
        description="Each service brings the schema to the latest migration as it starts. The "
        "launcher migrates once before it starts them and sets this false for its children "
        "(a check per process costs about 0.3 CPU-s); `launcher --init` always migrates",
    )
    # An idle transcoding service (two workers) took 2.37 % of a core at 0.25 s, against
    # 0.73 % at 1 s (scripts/bench.py idle): work queued anywhere rings (doorbell.py), so the
    # poll finds only what comes due with time (a retry's delay, a lapsed lease), where a
    # second is nothing.
    poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often an idle worker looks for work that no ring announces (a "
        "retry's delay passed, a dead worker's lease lapsed); a faster poll costs an idle "
        "platform more CPU. Work queued wakes idle workers at once: on the same machine "
        "through a socket each, on others through PostgreSQL's NOTIFY "
        "(services/core/doorbell.py)",
    )
    max_attempts: int = Field(3, description="Encode attempts before a job is failed")
    retry_backoff_seconds: float = Field(5.0, description="First retry delay, doubled each time")
    stop_grace_seconds: float = Field(1.0, description="SIGTERM to SIGKILL delay when stopping")

    admin_token: str = Field(
        "",
        description="Bearer token for admin, delete, stop, resume and metadata writes; "
        "empty = generated once into STORAGE_DIR/admin_token (mode 600)",
    )
    upload_token: str = Field("", description="When set, uploading needs this bearer token too")
    playback_signing_key: str = Field(
        "", description="When set, playlists and segments need a signed, expiring token"
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins allowed to call the APIs (uploads, writes, admin) "
        "from a browser; empty = the gateway's own origin and localhost; * = any (then never "
        "with credentials)",
    )
    playback_origins: str = Field(
        "*",
        description="Comma-separated origins allowed to load playback (/stream/: playlists, "
        "segments, pictures, downloads) from a browser; * = any, without credentials",
    )
    segment_cache_mb: int = Field(
        64,
        ge=0,
        le=1024 * 1024,
        description="Memory each file-serving process (the streaming service's and the "
        "gateway's workers) keeps segments asked for more than once in (MiB); 0 = every "
        "segment read from its file",
    )
    direct_upload_max_seconds: int = Field(
        7 * 24 * 3600,
        ge=60,
        description="Longest lifetime a direct upload URL may be given (seconds)",
    )

    public_url: str = Field(
        "",
        description="The site's public base URL (https://videos.example.com) for oEmbed, "
        "embed and discovery links; empty = the scheme and Host each request came with",
    )
    embed_frame_ancestors: str = Field(
        "*",
        description="Sites that may frame the /embed/ player (CSP frame-ancestors sources): "
        "* = any site, or e.g. 'https://a.example https://b.example'",
    )

    webhook_urls: str = Field(
        "",
        description="Comma-separated http(s) URLs sent upload.completed, video.ready and "
        "video.failed as signed JSON; empty = no webhooks",
    )
    webhook_secret: str = Field(
        "", description="HMAC-SHA256 key of the Webhook-Signature header (needed with URLs)"
    )
    webhook_max_attempts: int = Field(8, ge=1, description="Deliveries tried before failed")
    webhook_backoff_seconds: float = Field(
        5.0, gt=0, description="First webhook retry delay, doubled each time"
    )
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="A receiver's time to answer")
    webhook_poll_seconds: float = Field(
        1.0, gt=0, description="How often the admin service looks for webhooks to send"
    )

    log_level: str = Field("INFO", description="Log level of every service")
    log_format: str = Field(
        "json", pattern="^(json|text)$", description="json: one object a line; text: plain"
    )
    access_log: bool = Field(
        False, description="A log line for every request a server answers (off: /metrics counts)"
    )

    storage_url: str = Field(
        "",
        description="Where media is stored: empty = the local folder STORAGE_DIR; "
        "s3://bucket/prefix = an S3-compatible bucket (AWS_* settings below)",
    )
    aws_endpoint_url: str = Field(
        "", description="S3 endpoint (MinIO, SeaweedFS, R2, ...); empty = AWS S3 itself"
    )
    aws_access_key_id: str = Field(
        "", description="S3 access key; empty = boto3's usual sources (profile, instance role)"
    )
    aws_secret_access_key: str = Field("", description="S3 secret key, with the access key")
    aws_region: str = Field("us-east-1", description="S3 region the requests are signed for")
    media_public_url: str = Field(
        "",
        description="Public base URL of the stored media (a CDN or public bucket), for "
        "segment URLs; empty = media is served through the streaming service",
    )
    s3_connect_timeout_seconds: float = Field(
        5.0, gt=0, description="Longest wait for a connection to the S3 endpoint"
    )
    s3_read_timeout_seconds: float = Field(
        60.0, gt=0, description="Longest wait for the S3 endpoint to send the next bytes"
    )
    s3_max_attempts: int = Field(
        3, ge=1, description="Tries of one S3 request (throttling, 5xx, dropped connections)"
    )

    def service_url(self, name: str) -> str:
        """Base URL of a service by name (`upload`, `transcoding`, ...), explicit URL first."""
        explicit: str = getattr(self, f"{name}_url")
        if explicit:
            return explicit.rstrip("/")
        port: int = getattr(self, f"{name}_port")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{port}"

    def allowed_origins(self) -> list[str]:
        """CORS_ORIGINS as a list, or the gateway's own origin and localhost."""
        if self.cors_origins.strip():
            return origin_list(self.cors_origins)
        port = self.gateway_port
        return [f"http://{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")]

    def playback_origin_list(self) -> list[str]:
        """PLAYBACK_ORIGINS as a list (`*` alone when empty: playback is public anyway)."""
        return origin_list(self.playback_origins) or ["*"]

    def webhook_url_list(self) -> list[str]:
        """WEBHOOK_URLS as a list (checked at start-up: http(s) with a host)."""
        return [u.strip() for u in self.webhook_urls.split(",") if u.strip()]

    @model_validator(mode="after")
    def _check_webhooks(self) -> "Settings":
        # Refuse to start rather than send unsigned or unsendable webhooks.
        for url in self.webhook_url_list():
            parsed = urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"WEBHOOK_URLS: {url!r} is not an http(s) URL with a host")
        if self.webhook_url_list() and not self.webhook_secret:
            raise ValueError("WEBHOOK_URLS is set but WEBHOOK_SECRET is empty: set the key")
        return self

    @model_validator(mode="after")
    def _check_opening_length(self) -> "Settings":
        # A sliver of an opening (a frame or two) would cost an ffmpeg start-up and a
        # segment of its own for nothing a viewer could see.
        if 0 < self.opening_seconds < MIN_OPENING_SECONDS:
            raise ValueError(
                f"OPENING_SECONDS is {self.opening_seconds:g}: use 0 (no short opening) or at "
                f"least {MIN_OPENING_SECONDS:g}"
            )
        return self

    @model_validator(mode="after")
    def _check_opening_preset(self) -> "Settings":
        # A rung's CODECS is read from its first segment, the opening: the opening must use
        # the H.264 profile the rest does. (An ultrafast X264_PRESET takes the opening along,
        # options and all: see plan.encode_options.)
        if (
            self.x264_preset != "ultrafast"
            and self.opening_x264_preset == "ultrafast"
            and not {"8x8dct=1", "bframes=3"} <= set(self.opening_x264_params.split(":"))
        ):
            raise ValueError(
                "an ultrafast OPENING_X264_PRESET needs 8x8dct=1 and bframes=3 in "
                "OPENING_X264_PARAMS: without them the opening is Constrained Baseline, the "
                "rest High, and the decoding times step back where they meet"
            )
        return self

    @model_validator(mode="after")
    def _check_public_url(self) -> "Settings":
        # Written into HTML and JSON answers: refuse to start rather than emit broken links.
        if self.public_url:
            parsed = urlsplit(self.public_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"PUBLIC_URL: {self.public_url!r} is not an http(s) URL")
            if parsed.query or parsed.fragment:
                raise ValueError("PUBLIC_URL: give the base URL only, with no ?query or #part")
        return self

    @model_validator(mode="after")
    def _check_frame_ancestors(self) -> "Settings":
        # Sent as a header: a ';' or ',' would smuggle in other directives or policies.
        sources = self.embed_frame_ancestors.split()
        if not sources or any(not FRAME_SOURCE_RE.fullmatch(s) for s in sources):
            raise ValueError(
                "EMBED_FRAME_ANCESTORS: give CSP sources separated by spaces, e.g. * or "
                f"'https://a.example https://*.b.example', not {self.embed_frame_ancestors!r}"
            )
        return self

    @property
    def effective_database_url(self) -> str:
        """DATABASE_URL, or the embedded SQLite file under the storage folder."""
        return self.database_url or f"sqlite:///{self.storage_dir / 'videos.db'}"


def origin_list(text: str) -> list[str]:
    """A comma-separated list of origins (`https://example.com`, `*`) as a list."""
    return [o.strip().rstrip("/") for o in text.split(",") if o.strip()]


SERVICE_NAMES = ("upload", "transcoding", "metadata", "streaming", "admin")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (a FastAPI dependency; tests override it)."""
    return Settings()
