"""Metadata service, through the gateway: the video records."""

import asyncio

import httpx
import pytest

from tests.harness import upload

CHUNK = 1024 * 1024
FIELDS = {
    "id",
    "filename",
    "size",
    "sha256",
    "duration",
    "width",
    "height",
    "video_codec",
    "audio_codec",
    "status",
    "qualities",
    "created_at",
    "updated_at",
    "error",
}


def test_record_holds_what_the_platform_knows(client, transcoded, clips):
    record = client.get(f"/videos/{transcoded['full']}").json()
    assert set(record) >= FIELDS
    assert record["filename"] == clips["full"].name
    assert record["size"] == clips["full"].stat().st_size
    assert (record["width"], record["height"]) == (1920, 1080)
    assert record["video_codec"] == "h264" and record["audio_codec"] == "aac"
    assert 3.9 < record["duration"] < 4.2
    assert record["status"] == "ok"


def test_list_contains_uploaded_videos(client, transcoded):
    listed = {v["id"] for v in client.get("/videos", params={"limit": 1000}).json()}
    assert set(transcoded.values()) <= listed
    ok_only = client.get("/videos", params={"status": "ok", "limit": 1000}).json()
    assert all(v["status"] == "ok" for v in ok_only)


def test_create_update_delete_a_record(client):
    created = client.post("/videos", json={"filename": "made-by-hand.mp4", "duration": 12.5})
    assert created.status_code == 201, created.text
    video_id = created.json()["id"]
    updated = client.put(f"/videos/{video_id}", json={"filename": "renamed.mp4"})
    assert updated.json()["filename"] == "renamed.mp4"
    assert updated.json()["duration"] == 12.5
    assert client.delete(f"/videos/{video_id}").json() == {"deleted": video_id}
    assert client.get(f"/videos/{video_id}").status_code == 404


def test_invalid_record_fields_are_422_with_the_field_named(client):
    response = client.post("/videos", json={"filename": "x.mp4", "width": -5})
    assert response.status_code == 422
    assert "width" in response.json()["detail"]
    # JSON as Python reads it takes Infinity and 1e400 (infinite too): no duration is.
    for duration in (b"Infinity", b"1e400"):
        body = b'{"filename": "x.mp4", "duration": ' + duration + b"}"
        response = client.post(
            "/videos", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (duration, response.text)
        assert "duration" in response.json()["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("filename", "nul\x00.mp4"), ("filename", "two\nlines.mp4"), ("video_codec", "h264\x00")],
)
def test_text_a_database_cannot_keep_as_a_label_is_422_and_changes_nothing(client, field, value):
    # PostgreSQL's text cannot hold NUL: stored as it came, it was a 500 there (found by
    # tests/test_fuzz.py), and a label with a line break breaks the lines it is shown on.
    created = client.post("/videos", json={"filename": "kept.mp4", "video_codec": "h264"})
    assert created.status_code == 201, created.text
    video_id = created.json()["id"]
    refused = client.post("/videos", json={"filename": "x.mp4", field: value})
    assert refused.status_code == 422, refused.text
    assert field in refused.json()["detail"] and "control characters" in refused.json()["detail"]
    changed = client.put(f"/videos/{video_id}", json={field: value})
    assert changed.status_code == 422, changed.text
    record = client.get(f"/videos/{video_id}").json()
    assert (record["filename"], record["video_codec"]) == ("kept.mp4", "h264")


def test_stop_stopped_resume_flags(client, clips):
    video_id, _ = upload(client, clips["long"], chunk_size=CHUNK)
    stop = client.put(f"/videos/{video_id}/stop")
    assert stop.status_code == 200, stop.text
    assert client.get(f"/videos/{video_id}/stopped").json() == {
        "video_id": video_id,
        "stopped": True,
    }
    resume = client.put(f"/videos/{video_id}/resume")
    assert resume.status_code == 200
    assert client.get(f"/videos/{video_id}/stopped").json()["stopped"] is False
    assert client.delete(f"/admin/videos/{video_id}").status_code == 200


def test_unknown_and_malformed_ids(client):
    assert client.get("/videos/" + "f" * 32).status_code == 404
    assert client.get("/videos/..%2f..%2fetc").status_code in (400, 404)
    assert client.put("/videos/xyz/stop").status_code == 400


async def test_many_requests_at_once_are_all_answered(platform):
    # More requests at once than a service has worker threads (40) and database connections
    # (15): each request's endpoint waits in a thread for a connection, and a request that
    # has one needs a thread again to finish. Every thread waiting for a connection, none came
    # back, and the service answered nothing for minutes.
    url = platform.service_url("metadata") + "/videos?limit=5"
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=60) as http:
        answers = await asyncio.gather(*(http.get(url) for _ in range(200)))
    assert sorted({answer.status_code for answer in answers}) == [200]
