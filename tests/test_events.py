"""The event trail and webhooks: every status change is recorded in order with its reason; the
configured receivers (real HTTP servers started here) get signed payloads, retried on 5xx."""

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from services.admin import webhooks
from services.core import outbox
from services.core.db import init_db, session_scope
from services.core.events import record
from services.core.models import WebhookDelivery, utcnow
from services.core.settings import Settings
from tests.harness import (
    Platform,
    create_database,
    database_server_under_test,
    drop_database,
    upload,
    wait_status,
)

CHUNK = 1024 * 1024
SECRET = "test-webhook-secret"
FLAKY_FAILURES = 2

# Real ffmpeg, except: every encode fails while the fail flag exists, and each start waits a
# moment while the slow flag exists (so a job is surely still running when it is stopped).
FFMPEG_WRAPPER = """#!/bin/sh
[ -e "{fail}" ] && {{ echo "injected failure" >&2; exit 1; }}
[ -e "{slow}" ] && sleep 2
exec ffmpeg "$@"
"""


class Receiver:
    """A webhook receiver on a free port that records every request; it answers 500 to the
    first `failures` requests of each delivery id, then 200."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code = receiver.answer(dict(self.headers), body, self.path)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def answer(self, headers: dict[str, str], body: bytes, path: str) -> int:
        with self.lock:
            seen = sum(1 for r in self.requests if r["id"] == headers.get("Webhook-Id"))
            code = 500 if seen < self.failures else 200
            self.requests.append(
                {"id": headers.get("Webhook-Id"), "headers": headers, "body": body, "code": code}
            )
            self.requests[-1]["path"] = path
        return code

    def received(self, video_id: str, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            found = [r for r in self.requests if _payload(r)["data"]["id"] == video_id]
        return [r for r in found if _payload(r)["type"] == kind]

    def wait_for(self, video_id: str, kind: str, count: int = 1, timeout: float = 60) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(video_id, kind)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{kind} of {video_id} not received {count} times: {self.requests}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _payload(request: dict[str, Any]) -> dict[str, Any]:
    return json.loads(request["body"])


def signature_is_valid(secret: str, header: str, body: bytes) -> bool:
    """Verify `t=<unix>,v1=<hex>` the way a receiver would."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


class Hooked:
    """The platform under test, its two receivers and the ffmpeg flags."""

    def __init__(self, root: Path) -> None:
        self.fail_flag, self.slow_flag = root / "fail-ffmpeg", root / "slow-ffmpeg"
        wrapper = root / "ffmpeg"
        wrapper.write_text(FFMPEG_WRAPPER.format(fail=self.fail_flag, slow=self.slow_flag))
        wrapper.chmod(0o755)
        self.good, self.flaky = Receiver(), Receiver(failures=FLAKY_FAILURES)
        self.platform = Platform(
            root / "storage",
            WEBHOOK_URLS=f"{self.good.url},{self.flaky.url}",
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_BACKOFF_SECONDS="0.2",
            WEBHOOK_POLL_SECONDS="0.1",
            FFMPEG_BIN=str(wrapper),
            MAX_ATTEMPTS="2",
            RETRY_BACKOFF_SECONDS="0.2",
        )

    def close(self) -> None:
        self.platform.drop()
        self.good.close()
        self.flaky.close()


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooked]:
    setup = Hooked(tmp_path_factory.mktemp("webhooks"))
    try:
        setup.platform.start()
        yield setup
    finally:
        setup.close()


@pytest.fixture(scope="module")
def admin(hooked: Hooked) -> Iterator[httpx.Client]:
    with hooked.platform.client() as client:
        yield client


def trail(client: httpx.Client, video_id: str) -> dict[str, Any]:
    answer = client.get(f"/admin/videos/{video_id}/events")
    assert answer.status_code == 200, answer.text
    return answer.json()


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


def assert_consistent(events: list[dict[str, Any]]) -> None:
    """Ids and times never go backwards; each change starts where the previous one ended."""
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert all(e["at"].endswith("Z") for e in events), events
    assert times == sorted(times), events
    status = None
    for event in events:
        if event["from_status"] is not None:
            assert event["from_status"] == status, events
        status = event["to_status"] or status
    assert all(e["reason"] for e in events), events


def test_a_transcoded_video_has_its_changes_in_order(hooked, admin, clips):
    video_id, done = upload(admin, clips["tiny"], chunk_size=CHUNK)
    assert done is not None and done.status_code == 200, done.text
    assert wait_status(admin, video_id)["overall"] == "ok"
    events = trail(admin, video_id)["events"]
    assert kinds(events) == [
        "upload.created",
        "upload.completed",
        "video.queued",
        "job.running",
        "video.ready",
    ]
    assert_consistent(events)
    assert events[0]["to_status"] == "uploading"
    assert (events[2]["from_status"], events[2]["to_status"]) == ("uploading", "queued")
    host_worker, _, pid = events[3]["actor"].rpartition(":")
    assert "/" in host_worker and pid.isdigit(), "job.running names the worker"
    assert (events[4]["from_status"], events[4]["to_status"]) == ("running", "ok")
    qualities = admin.get(f"/videos/{video_id}").json()["qualities"]
    assert qualities and all(q in events[4]["reason"] for q in qualities)


def test_receivers_get_correctly_signed_payloads(hooked, admin, clips):
    video_id, _ = upload(admin, clips["tiny"], chunk_size=CHUNK)
    wait_status(admin, video_id)
    ready = hooked.good.wait_for(video_id, "video.ready")
    completed = hooked.good.wait_for(video_id, "upload.completed")
    for request in (*ready, *completed):
        headers, body = request["headers"], request["body"]
        assert headers["Content-Type"] == "application/json"
        assert signature_is_valid(SECRET, headers["Webhook-Signature"], body)
        # The check can fail: another key, or one changed byte, does not verify.
        assert not signature_is_valid("another-secret", headers["Webhook-Signature"], body)
        assert not signature_is_valid(SECRET, headers["Webhook-Signature"], body + b" ")
        assert _payload(request)["id"] == headers["Webhook-Id"]
    payload = _payload(ready[0])
    assert payload["data"]["status"] == "ok" and payload["data"]["qualities"]
    assert payload["created_at"].endswith("Z")
    event_ids = {e["kind"]: e["id"] for e in trail(admin, video_id)["events"]}
    assert payload["event_id"] == event_ids["video.ready"]
    assert len(ready) == 1, "a delivered webhook is not sent again"


def test_a_receiver_answering_500_gets_the_same_delivery_again_until_it_succeeds(
    hooked, admin, clips
):
    video_id, _ = upload(admin, clips["tiny"], chunk_size=CHUNK)
    wait_status(admin, video_id)
    tries = hooked.flaky.wait_for(video_id, "video.ready", count=FLAKY_FAILURES + 1)
    assert [t["code"] for t in tries] == [500, 500, 200]
    assert len({t["id"] for t in tries}) == 1 and len({t["body"] for t in tries}) == 1
    for attempt in tries:
        assert signature_is_valid(SECRET, attempt["headers"]["Webhook-Signature"], attempt["body"])
    deliveries = _wait_delivered(admin, video_id, "video.ready", count=2)
    by_url = {d["url"]: d for d in deliveries}
    assert by_url[hooked.good.url]["attempts"] == 1
    flaky = by_url[hooked.flaky.url]
    assert (flaky["attempts"], flaky["last_status_code"]) == (FLAKY_FAILURES + 1, 200)
    assert flaky["id"] == tries[0]["id"]


def _wait_delivered(client, video_id, kind, count, timeout=30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [d for d in trail(client, video_id)["webhooks"] if d["type"] == kind]
        if len(found) == count and all(d["status"] == "delivered" for d in found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"{kind} deliveries of {video_id} not all delivered: {found}")


def test_stop_resume_and_delete_are_recorded_with_reasons(hooked, admin, clips):
    hooked.slow_flag.touch()
    try:
        video_id, _ = upload(admin, clips["small"], chunk_size=CHUNK)
        assert admin.post(f"/admin/videos/{video_id}/stop").status_code == 200
        wait_status(admin, video_id, {"stopped"}, timeout=10)
    finally:
        hooked.slow_flag.unlink()
    assert admin.post(f"/admin/videos/{video_id}/resume").status_code == 200
    assert wait_status(admin, video_id)["overall"] == "ok"
    assert admin.delete(f"/admin/videos/{video_id}").status_code == 200
    assert admin.get(f"/videos/{video_id}").status_code == 404
    events = trail(admin, video_id)["events"]  # the trail outlives the video
    assert_consistent(events)
    stopped = next(e for e in events if e["kind"] == "job.stopped")
    resumed = next(e for e in events if e["kind"] == "job.resumed")
    assert stopped["from_status"] in ("queued", "running") and stopped["to_status"] == "stopped"
    assert stopped["reason"] == "stopped by an operator" and stopped["actor"] == "operator"
    assert (resumed["from_status"], resumed["to_status"]) == ("stopped", "queued")
    assert "resumed by an operator" in resumed["reason"]
    assert kinds(events)[-2:] == ["video.ready", "video.deleted"]
    assert events[-1]["from_status"] == "ok" and events[-1]["to_status"] is None
    assert kinds(events).index("job.stopped") < kinds(events).index("job.resumed")


def test_a_failing_transcode_records_retries_and_video_failed_and_sends_it(hooked, admin, clips):
    hooked.fail_flag.touch()
    try:
        video_id, _ = upload(admin, clips["tiny"], chunk_size=CHUNK)
        assert wait_status(admin, video_id)["overall"] == "failed"
    finally:
        hooked.fail_flag.unlink()
    events = trail(admin, video_id)["events"]
    assert_consistent(events)
    assert "chunk.retry" in kinds(events) and kinds(events)[-1] == "video.failed"
    retry = next(e for e in events if e["kind"] == "chunk.retry")
    assert "attempt 1 of 2 failed" in retry["reason"] and "injected failure" in retry["reason"]
    failed = events[-1]
    assert failed["to_status"] == "failed" and "injected failure" in failed["reason"]
    sent = hooked.good.wait_for(video_id, "video.failed")
    assert signature_is_valid(SECRET, sent[0]["headers"]["Webhook-Signature"], sent[0]["body"])
    assert "injected failure" in _payload(sent[0])["data"]["error"]

    assert admin.post(f"/admin/videos/{video_id}/resume").status_code == 200
    assert wait_status(admin, video_id)["overall"] == "ok"
    after = trail(admin, video_id)["events"]
    resumed = next(e for e in after if e["kind"] == "job.resumed")
    assert resumed["from_status"] == "failed" and "retried by an operator" in resumed["reason"]
    assert kinds(after)[-1] == "video.ready"


def test_content_that_is_not_a_video_records_and_sends_the_failure(hooked, admin, clips):
    video_id, done = upload(admin, clips["text"], chunk_size=CHUNK)
    assert done is not None and done.status_code == 422
    events = trail(admin, video_id)["events"]
    assert kinds(events) == ["upload.created", "upload.completed", "video.failed"]
    assert events[-1]["reason"].startswith("not a video")
    completed = hooked.good.wait_for(video_id, "upload.completed")
    failed = hooked.good.wait_for(video_id, "video.failed")
    assert _payload(completed[0])["data"]["status"] == "failed"
    assert _payload(failed[0])["data"]["error"]


def test_events_endpoint_checks_the_id_and_the_token(hooked, admin):
    bad = admin.get("/admin/videos/..%2fetc/events")
    assert bad.status_code in (400, 404)
    malformed = admin.get("/admin/videos/not-an-id/events")
    assert malformed.status_code == 400 and "32 lowercase hex" in malformed.json()["detail"]
    unknown = admin.get(f"/admin/videos/{'0' * 32}/events")
    assert unknown.status_code == 404 and "no video" in unknown.json()["detail"]
    anonymous = httpx.get(f"{hooked.platform.url}/admin/videos/{'0' * 32}/events")
    assert anonymous.status_code == 401


def test_webhook_settings_refuse_other_schemes_and_a_missing_secret():
    with pytest.raises(ValidationError, match="not an http"):
        Settings(webhook_urls="file:///etc/passwd", webhook_secret="s")
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET is empty"):
        Settings(webhook_urls="https://example.invalid/hook")
    ok = Settings(webhook_urls=" https://a.invalid/x , http://b.invalid ", webhook_secret="s")
    assert ok.webhook_url_list() == ["https://a.invalid/x", "http://b.invalid"]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Settings]:
    """A migrated database of the test's own (PostgreSQL when TEST_DATABASE_URL is set)."""
    server = database_server_under_test()
    url = create_database(server) if server else ""
    settings = Settings(
        storage_dir=tmp_path / "storage",
        database_url=url,
        webhook_urls="http://127.0.0.1:9/hook",
        webhook_secret=SECRET,
    )
    init_db(settings)
    yield settings
    if url:
        drop_database(url)


def test_a_delivery_whose_sender_died_is_claimed_again(database):
    video_id = "a" * 32
    with session_scope(database) as session:
        event = record(session, video_id=video_id, kind="video.failed", reason="test")
        assert outbox.enqueue(session, event, database) == 1
    with session_scope(database) as session:
        first = webhooks.claim_due(session, worker_id="dead", lease_seconds=30)
    with session_scope(database) as session:
        assert webhooks.claim_due(session, worker_id="other", lease_seconds=30) == []
        # The holder died without recording anything: its lease runs out.
        held = session.get(WebhookDelivery, first[0].id)
        assert held is not None
        held.lease_expires_at = utcnow() - timedelta(seconds=1)
    with session_scope(database) as session:
        again = webhooks.claim_due(session, worker_id="other", lease_seconds=30)
    assert [d.id for d in again] == [first[0].id] and again[0].body == first[0].body
    with session_scope(database) as session:
        late = webhooks.record_attempt(
            session,
            delivery_id=first[0].id,
            worker_id="dead",
            status_code=200,
            error=None,
            settings=database,
        )
    assert late is None, "an outcome from a sender that lost the lease is ignored"
