"""Simulated HLS viewers for locust: each loads the master playlist, picks a rung by a simulated
downlink, loads that rung's playlist (and its separate audio track's, as a player does) and
fetches their segments in order at playback speed.

    .venv/bin/locust -f scripts/locustfile.py --headless -u 200 -r 50 -t 30s \\
        --host http://127.0.0.1:8000 --video-ids ID1,ID2

Requests are named by kind ("master", "playlist", "segment") so locust's percentiles are per
kind. The viewer behaves like a player: the first segments up to `--buffer-seconds` of media
are fetched back to back, every later one only when the playhead is that far from the end of
the buffer, and a finished viewer starts a new session (a new master, a new rung). A viewer's
first session joins mid-video at a random point with its buffer already full, so a short
measurement window sees the steady mix of a long-running audience rather than N simultaneous
starts (`--no-join-mid-video` turns that off and measures the flash crowd instead).
"""

import math
import random
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import gevent
from locust import FastHttpUser, constant, events, task

ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
# Seconds a failed master or playlist waits before the viewer tries again (a player's retry).
RETRY_SECONDS = 1.0


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    """The viewer's knobs, each also settable from the environment."""
    parser.add_argument(
        "--video-ids",
        env_var="VIEWER_VIDEO_IDS",
        default="",
        help="comma-separated video ids; each session watches one of them at random",
    )
    parser.add_argument(
        "--buffer-seconds",
        env_var="VIEWER_BUFFER_SECONDS",
        type=float,
        default=12.0,
        help="media a player keeps buffered ahead of the playhead (fetched at once on start)",
    )
    parser.add_argument(
        "--min-mbps",
        env_var="VIEWER_MIN_MBPS",
        type=float,
        default=1.0,
        help="slowest simulated downlink; downlinks are drawn log-uniformly in [min, max]",
    )
    parser.add_argument(
        "--max-mbps",
        env_var="VIEWER_MAX_MBPS",
        type=float,
        default=25.0,
        help="fastest simulated downlink",
    )
    parser.add_argument(
        "--no-join-mid-video",
        env_var="VIEWER_NO_JOIN_MID_VIDEO",
        action="store_true",
        default=False,
        help="every viewer starts at 0 with an empty buffer (a flash crowd)",
    )


@dataclass(frozen=True)
class Variant:
    """One rung of a master playlist; `audio` is the URI of its separate audio track, if any."""

    uri: str
    bandwidth: int
    audio: str | None


@dataclass(frozen=True)
class Segment:
    """One media segment of a media playlist."""

    uri: str
    seconds: float


def attributes(line: str) -> dict[str, str]:
    """The attribute list of a tag line (`#TAG:A=1,B="x,y"`), quotes removed."""
    return {k: v.strip('"') for k, v in ATTRIBUTE.findall(line.split(":", 1)[1])}


def parse_master(text: str) -> list[Variant]:
    """The rungs of a multivariant playlist (URI lines after #EXT-X-STREAM-INF), each with the
    audio rendition a player would load beside it (the group's DEFAULT, else its first)."""
    lines = [ln.strip() for ln in text.splitlines()]
    audio = audio_renditions(lines)
    variants: list[Variant] = []
    pending: dict[str, str] | None = None
    for line in lines:
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = attributes(line)
        elif line and not line.startswith("#") and pending is not None:
            bandwidth = int(pending.get("BANDWIDTH", "0"))
            variants.append(Variant(line, bandwidth, audio.get(pending.get("AUDIO", ""))))
            pending = None
    return variants


def audio_renditions(lines: list[str]) -> dict[str, str]:
    """Audio GROUP-ID -> URI of the rendition a player picks (DEFAULT=YES, else the first)."""
    audio: dict[str, str] = {}
    for line in lines:
        if not line.startswith("#EXT-X-MEDIA:"):
            continue
        media = attributes(line)
        if media.get("TYPE") == "AUDIO" and "URI" in media:
            group = media.get("GROUP-ID", "")
            if group not in audio or media.get("DEFAULT") == "YES":
                audio[group] = media["URI"]
    return audio


def parse_media(text: str) -> list[Segment]:
    """The segments of a media playlist (URI lines after #EXTINF)."""
    segments, seconds = [], None
    for line in (ln.strip() for ln in text.splitlines()):
        if line.startswith("#EXTINF:"):
            seconds = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line and not line.startswith("#") and seconds is not None:
            segments.append(Segment(line, seconds))
            seconds = None
    return segments


def pick_variant(variants: list[Variant], downlink_bps: float) -> Variant:
    """The highest rung that fits in 80% of the downlink (players keep a margin), else the
    lowest."""
    fitting = [v for v in variants if v.bandwidth <= 0.8 * downlink_bps]
    if fitting:
        return max(fitting, key=lambda v: v.bandwidth)
    return min(variants, key=lambda v: v.bandwidth)


def fetch_times(segments: list[Segment], buffer_seconds: float) -> list[float]:
    """When, in seconds after playback starts, a player asks for each segment: as soon as the
    end of what it holds is less than `buffer_seconds` ahead of the playhead."""
    times, media_end = [], 0.0
    for segment in segments:
        times.append(max(0.0, media_end - buffer_seconds))
        media_end += segment.seconds
    return times


class Viewer(FastHttpUser):
    """One person watching: sessions of master, rung playlist, segments at playback speed."""

    # The task paces itself; locust's own wait only applies between sessions.
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.video_ids = [v for v in options.video_ids.split(",") if v]
        if not self.video_ids:
            raise ValueError("no video to watch: pass --video-ids ID[,ID...] or VIEWER_VIDEO_IDS")
        self.buffer_seconds = options.buffer_seconds
        low, high = math.log(options.min_mbps), math.log(options.max_mbps)
        # One downlink per viewer: the same person keeps choosing the same rung.
        self.downlink_bps = math.exp(random.uniform(low, high)) * 1e6
        self.join_mid_video = not options.no_join_mid_video

    @task
    def watch(self) -> None:
        """One session: a video from the start (or, for the first, from a random point)."""
        base = f"/stream/{random.choice(self.video_ids)}/"
        master = self._get(base + "master.m3u8", "master")
        variants = parse_master(master) if master is not None else []
        if not variants:
            gevent.sleep(RETRY_SECONDS)
            return
        variant = pick_variant(variants, self.downlink_bps)
        # A player loads the rung and its separate audio track side by side.
        tracks = [urljoin(base, uri) for uri in (variant.uri, variant.audio) if uri]
        loaded = [(url, self._segments(url)) for url in tracks]
        if any(not segments for _, segments in loaded):
            gevent.sleep(RETRY_SECONDS)
            return
        self._play(loaded)

    def _segments(self, url: str) -> list[Segment]:
        media = self._get(url, "playlist")
        return parse_media(media) if media is not None else []

    def _play(self, tracks: list[tuple[str, list[Segment]]]) -> None:
        """Fetch every track's segments at their times, then wait for the end of playback."""
        duration = max(sum(s.seconds for s in segments) for _, segments in tracks)
        elapsed = 0.0
        if self.join_mid_video:
            # Joined mid-video with a full buffer: what it would have fetched before is done.
            elapsed = random.uniform(0.0, duration)
            self.join_mid_video = False
        started = time.monotonic() - elapsed
        gevent.joinall(
            [gevent.spawn(self._track, url, segments, started, elapsed) for url, segments in tracks]
        )
        gevent.sleep(max(0.0, started + duration - time.monotonic()))

    def _track(self, url: str, segments: list[Segment], started: float, elapsed: float) -> None:
        """One track's segments in order, each when the player would ask for it."""
        for segment, at in zip(segments, fetch_times(segments, self.buffer_seconds), strict=True):
            if at < elapsed:
                continue  # fetched before this viewer was simulated
            gevent.sleep(max(0.0, started + at - time.monotonic()))
            self._get(urljoin(url, segment.uri), "segment", text=False)

    def _get(self, url: str, kind: str, *, text: bool = True) -> str | None:
        """GET `url` recorded under `kind`; the body as text, or None on a failure."""
        with self.client.get(url, name=kind, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{kind}: HTTP {response.status_code}")
                return None
            if not response.content:
                response.failure(f"{kind}: empty body")
                return None
            return response.text if text else ""
