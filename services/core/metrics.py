"""Prometheus metrics: every service exposes `/metrics`.

Request counts and latency by route template, bytes uploaded and served, and (where a service
owns them) jobs by state, queue depth, chunk encode time, realtime factor and ffmpeg failures.
"""

import os
import time
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer a request (to the end of its body)",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
BYTES_SENT = Counter("http_response_bytes_total", "Response body bytes sent", ["service", "kind"])
BYTES_UPLOADED = Counter("upload_bytes_total", "Chunk bytes written to originals")
CHUNK_SECONDS = Histogram(
    "transcode_unit_seconds",
    "Wall time of one unit of work (a video chunk or the audio)",
    ["kind"],
    buckets=(0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 900),
)
REALTIME = Histogram(
    "transcode_realtime_factor",
    "Seconds of media encoded per second of wall time, per unit",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 4, 8, 16, 64),
)
FFMPEG_FAILURES = Counter("ffmpeg_failures_total", "Units whose ffmpeg failed", ["kind"])
SEGMENT_CACHE_REQUESTS = Counter(
    "segment_cache_requests_total",
    "Plain GETs of segments (and other files that never change) answered by the HLS fast path, "
    "by whether memory held the file (hit) or the server read it (miss)",
    ["service", "result"],
)
SEGMENT_CACHE_BYTES = Gauge(
    "segment_cache_bytes",
    "Bytes of hot segments kept in memory (SEGMENT_CACHE_MB per process; summed over processes)",
    ["service"],
    multiprocess_mode="livesum",
)

# Label values come from fixed sets only: a label value as sent would let any client add
# series without end (one per made-up method or path).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED = "unmatched"


def method_label(method: str) -> str:
    """The request's method as a label: a known one, or `other`."""
    return method if method in METHODS else OTHER_METHOD


def route_label(scope: Scope) -> str:
    """The matched route's template (`/videos/{hash}`), or `unmatched`."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


_KINDS = {".ts": "segment", ".m4s": "segment", ".m3u8": "playlist", ".mp4": "segment"}


def _kind(path: str) -> str:
    if path.endswith("/original"):
        return "original"
    dot = path.rfind(".")
    return _KINDS.get(path[dot:], "other") if dot != -1 else "other"


class MetricsMiddleware:
    """Counts requests and body bytes, times them, labelled by the route's template."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started, status, sent = time.perf_counter(), [500], [0]

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            route, method = route_label(scope), method_label(scope["method"])
            REQUESTS.labels(self.service, method, route, str(status[0])).inc()
            LATENCY.labels(self.service, method, route).observe(time.perf_counter() - started)
            BYTES_SENT.labels(self.service, _kind(scope["path"])).inc(sent[0])


class JobsCollector(Collector):
    """Jobs by state and the queue depth, read from the database at scrape time."""

    def __init__(self, settings: object) -> None:
        self.settings = settings

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from sqlalchemy import func, select

        from services.core import jobs
        from services.core.db import session_scope
        from services.core.models import Job

        with session_scope(self.settings) as session:  # type: ignore[arg-type]
            counts = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            depth = jobs.queue_depth(session)
        by_state = GaugeMetricFamily("jobs", "Transcoding jobs by state", labels=["state"])
        for state, count in counts:
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily("queue_depth", "Units of work waiting for a worker", value=depth)


def exposition() -> tuple[bytes, str]:
    """The text exposition of this service's metrics, and its content type.

    A server with several worker processes (granian) sets PROMETHEUS_MULTIPROC_DIR: each
    process then writes its samples there and any of them reports the sum of all.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
