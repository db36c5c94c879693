"""Prometheus metrics on every service."""

import re

import httpx
import pytest

SERVICES = ("gateway", "upload", "transcoding", "metadata", "streaming", "admin")


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        # Greedy: label values (route templates) contain braces themselves.
        match = re.match(rf"^{name}(\{{.*\}})? ([0-9.e+-]+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_exposes_prometheus_metrics(platform, service):
    base = platform.service_url(service)
    httpx.get(f"{base}/health")
    response = httpx.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert metric(response.text, "http_requests_total", route="/health", status="200") >= 1


def test_metrics_count_uploads_serving_jobs_and_encodes(platform, client, transcoded):
    video_id = transcoded["small"]
    segment = client.get(f"/stream/{video_id}/360p/seg_00000.ts")
    assert segment.status_code == 200
    # The gateway serves segments itself from the shared storage (it proxies only what it
    # cannot find there); its two worker processes report one sum.
    gateway = "".join(httpx.get(f"{platform.url}/metrics").text for _ in range(4))
    assert metric(gateway, "http_response_bytes_total", kind="segment") >= 4 * len(segment.content)
    # On S3 there is no shared folder: the gateway relays segments, and the streaming
    # service (which reads them from the bucket) is the one that knows the route.
    served_by = (
        httpx.get(f"{platform.service_url('streaming')}/metrics").text
        if platform.env.get("STORAGE_URL")
        else gateway
    )
    assert (
        metric(
            served_by,
            "http_request_duration_seconds_count",
            route="/stream/{video_id}/{quality}/{segment}",
        )
        >= 1
    )
    upload = httpx.get(f"{platform.service_url('upload')}/metrics").text
    assert metric(upload, "upload_bytes_total") > 0
    admin = httpx.get(f"{platform.service_url('admin')}/metrics").text
    assert metric(admin, "jobs", state="ok") >= len(transcoded)
    assert "queue_depth" in admin
    transcoding = httpx.get(f"{platform.service_url('transcoding')}/metrics").text
    assert metric(transcoding, "transcode_unit_seconds_count", kind="video") >= 1
    assert metric(transcoding, "transcode_realtime_factor_count", kind="audio") >= 1
    assert "ffmpeg_failures_total" in transcoding


def test_logs_are_one_json_object_a_line_with_the_video_id(platform, transcoded):
    import json

    lines = [ln for ln in platform.log_path.read_text().splitlines() if ln.startswith("{")]
    assert lines, "the services log JSON"
    entries = [json.loads(ln) for ln in lines]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e.get("video_id") in transcoded.values() for e in entries)


def _access_lines(platform) -> list[dict]:  # type: ignore[no-untyped-def]
    import json

    lines = [ln for ln in platform.log_path.read_text().splitlines() if ln.startswith("{")]
    # httpx's "HTTP Request: ..." lines: the gateway relaying a request, one line each.
    access = ("uvicorn.access", "granian.access", "httpx")
    return [e for e in map(json.loads, lines) if e["logger"] in access]


def test_no_access_lines_unless_asked(platform, client, transcoded):
    # The logging configuration each app applies as it is imported once gave uvicorn's access
    # logger its handler back, so every request was a log line whatever the launcher said.
    assert client.get(f"/videos/{transcoded['small']}").status_code == 200
    assert httpx.get(f"{platform.service_url('upload')}/upload/nothing-here").status_code == 400

    assert _access_lines(platform) == []


def test_access_lines_when_asked(tmp_path):
    from tests.harness import Platform

    platform = Platform(tmp_path / "storage", ACCESS_LOG="true", WORKERS="0").start()
    try:
        httpx.get(f"{platform.service_url('upload')}/upload/nothing-here")
        httpx.get(f"{platform.url}/videos/nothing-here")
        lines = _access_lines(platform)
    finally:
        platform.drop()

    assert any("/upload/nothing-here" in e["message"] for e in lines), lines
    assert any(e["logger"] == "granian.access" for e in lines), "the gateway's (granian) lines too"
    assert any(e["logger"] == "httpx" for e in lines), "and the gateway's relayed requests"
