"""Admin service, through the gateway: status, videos, stop/resume/delete."""

from tests.harness import database_server_under_test, upload, wait_status

CHUNK = 1024 * 1024


def test_status_reports_services_disk_queue_and_running_jobs(client):
    status = client.get("/admin/status").json()
    assert status["database"] == ("postgresql" if database_server_under_test() else "sqlite")
    assert set(status["services"]) == {"upload", "transcoding", "metadata", "streaming", "admin"}
    assert all(s["status"] == "ok" for s in status["services"].values())
    assert status["disk"]["free"] > 0 and status["disk"]["total"] >= status["disk"]["free"]
    assert status["queue_depth"] >= 0
    assert isinstance(status["running_jobs"], list)


def test_videos_list_includes_each_job(client, transcoded):
    videos = {v["id"]: v for v in client.get("/admin/videos").json()}
    full = videos[transcoded["full"]]
    assert full["job"]["overall"] == "ok"


def test_video_status_shows_record_job_and_files(client, transcoded):
    status = client.get(f"/admin/videos/{transcoded['full']}/status").json()
    assert status["video"]["status"] == "ok"
    assert status["job"]["progress"] == 100
    assert status["files"]["master_playlist"] is True
    assert set(status["files"]["renditions"]) == {"1080p", "720p", "480p", "360p", "audio"}
    assert all(n >= 2 for n in status["files"]["renditions"].values())


def test_delete_leaves_nothing_on_disk(client, clips, platform):
    video_id, _ = upload(client, clips["small"], chunk_size=CHUNK)
    wait_status(client, video_id)
    assert (platform.storage / "hls" / video_id).exists()
    assert client.delete(f"/admin/videos/{video_id}").json() == {"deleted": video_id}
    assert not (platform.storage / "hls" / video_id).exists()
    assert not (platform.storage / "originals" / video_id).exists()
    assert client.get(f"/videos/{video_id}").status_code == 404
    assert client.get(f"/transcode/status/{video_id}").status_code == 404
    assert client.delete(f"/admin/videos/{video_id}").status_code == 404


def test_delete_while_running_stops_ffmpeg_and_leaves_nothing(client, clips, platform):
    video_id, _ = upload(client, clips["long"], chunk_size=CHUNK)
    wait_status(client, video_id, {"running"})
    assert client.delete(f"/admin/videos/{video_id}").status_code == 200
    assert platform.ffmpeg_pids(video_id) == []
    assert not (platform.storage / "hls" / video_id).exists()
    assert not (platform.storage / "originals" / video_id).exists()


def test_stop_resume_and_resume_all(client, clips):
    video_id, _ = upload(client, clips["long"], chunk_size=CHUNK)
    assert client.post(f"/admin/videos/{video_id}/stop").status_code == 200
    assert wait_status(client, video_id, {"stopped"}, timeout=10)["overall"] == "stopped"
    assert video_id in client.post("/admin/resume_all").json()["resumed"]
    assert client.get(f"/transcode/status/{video_id}").json()["overall"] in ("queued", "running")
    assert client.post(f"/admin/videos/{video_id}/stop").status_code == 200
    wait_status(client, video_id, {"stopped"}, timeout=10)
    resumed = client.post(f"/admin/videos/{video_id}/resume").json()
    assert resumed["overall"] in ("queued", "running")
    assert client.delete(f"/admin/videos/{video_id}").status_code == 200


def test_malformed_ids_never_touch_storage(client, platform):
    before = sorted(p.name for p in platform.storage.iterdir())
    for bad in ("%2e%2e", "..", "%252e%252e", "abc"):
        response = client.delete(f"/admin/videos/{bad}")
        assert 400 <= response.status_code < 500, (bad, response.status_code)
    assert sorted(p.name for p in platform.storage.iterdir()) == before
