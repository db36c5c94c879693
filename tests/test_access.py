"""Access: the admin token guards every write that is not an upload; tokens in constant time."""

import stat

import httpx
import pytest

from tests.harness import Platform

VIDEO = "0" * 32
GUARDED = [
    ("GET", "/admin/status"),
    ("GET", "/admin/videos"),
    ("POST", "/admin/resume_all"),
    ("DELETE", f"/admin/videos/{VIDEO}"),
    ("POST", f"/admin/videos/{VIDEO}/stop"),
    ("POST", f"/admin/videos/{VIDEO}/resume"),
    ("GET", f"/admin/videos/{VIDEO}/status"),
    ("POST", "/videos"),
    ("PUT", f"/videos/{VIDEO}"),
    ("DELETE", f"/videos/{VIDEO}"),
    ("PUT", f"/videos/{VIDEO}/stop"),
    ("PUT", f"/videos/{VIDEO}/resume"),
    ("POST", "/transcode/start"),
    ("POST", "/transcode/resume"),
]
OPEN = [
    ("GET", "/videos"),
    ("GET", f"/videos/{VIDEO}"),
    ("GET", f"/transcode/status/{VIDEO}"),
    ("GET", f"/stream/{VIDEO}/qualities"),
    ("GET", "/api/speedtest"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_guarded_endpoints_answer_401_without_the_admin_token(platform, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic x"}):
        response = httpx.request(method, platform.url + path, headers=headers, json={})
        assert response.status_code == 401, (method, path, headers, response.text)
        assert response.json()["error"] == "unauthorized"
        assert "Authorization: Bearer" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
    allowed = httpx.request(method, platform.url + path, headers=platform.auth, json={})
    assert allowed.status_code != 401, (method, path)


@pytest.mark.parametrize(("method", "path"), OPEN)
def test_watching_and_reading_stay_open(platform, method, path):
    assert httpx.request(method, platform.url + path).status_code != 401


def test_uploads_are_open_by_default(platform):
    response = httpx.post(
        platform.url + "/upload/init", data={"filename": "a.mp4", "total_chunks": 1}
    )
    assert response.status_code == 200


def test_upload_token_closes_uploading(tmp_path):
    platform = Platform(tmp_path / "storage", UPLOAD_TOKEN="up-secret").start()
    try:
        form = {"filename": "a.mp4", "total_chunks": 1}
        assert httpx.post(platform.url + "/upload/init", data=form).status_code == 401
        ok = httpx.post(
            platform.url + "/upload/init",
            data=form,
            headers={"Authorization": "Bearer up-secret"},
        )
        assert ok.status_code == 200
    finally:
        platform.drop()


def test_without_admin_token_one_is_generated_stored_private_and_printed(tmp_path):
    platform = Platform(tmp_path / "storage", ADMIN_TOKEN="").start()
    try:
        stored = platform.storage / "admin_token"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        token = stored.read_text().strip()
        assert len(token) >= 32
        assert token in platform.log_path.read_text()
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(platform.url + "/admin/status", headers=headers).status_code == 200
        assert httpx.get(platform.url + "/admin/status").status_code == 401
    finally:
        platform.drop()


def test_private_playback_needs_a_signed_unexpired_token(tmp_path, clips):
    import m3u8

    from tests.harness import upload, wait_status

    platform = Platform(tmp_path / "storage", PLAYBACK_SIGNING_KEY="k" * 32).start()
    try:
        with platform.client() as client:
            video_id, _ = upload(client, clips["small"], chunk_size=1 << 20)
            assert wait_status(client, video_id)["overall"] == "ok"
            other_id, _ = upload(client, clips["tiny"], chunk_size=1 << 20)
            assert wait_status(client, other_id)["overall"] == "ok"
            base = f"{platform.url}/stream/{video_id}"
            for path in ("/master.m3u8", "/360p/playlist.m3u8", "/360p/seg_00000.ts", "/original"):
                assert httpx.get(base + path).status_code == 403
                assert httpx.get(base + path + "?token=123.abc").status_code == 403
            grant = client.post(f"/admin/videos/{video_id}/playback_token").json()
            master = httpx.get(platform.url + grant["master_url"])
            assert master.status_code == 200
            assert master.headers["cache-control"] == "private, no-cache"
            playlist = m3u8.loads(master.text)
            for uri in [p.uri for p in playlist.playlists] + [m.uri for m in playlist.media]:
                assert uri.endswith(f"?token={grant['token']}"), uri
                media = httpx.get(f"{base}/{uri}")
                assert media.status_code == 200
                first = m3u8.loads(media.text).segments[0].uri
                folder = uri.split("/")[0]
                assert httpx.get(f"{base}/{folder}/{first}").status_code == 200
            theirs = f"{platform.url}/stream/{other_id}/master.m3u8?token={grant['token']}"
            assert httpx.get(theirs).status_code == 403, "a token opens its own video only"
            expired = client.post(f"/admin/videos/{video_id}/playback_token", params={"ttl": 1})
            assert expired.status_code == 422, "ttl has a floor of 60 s"
    finally:
        platform.drop()


def test_expired_tokens_are_refused():
    from services.core import signing

    token = signing.sign("key", "a" * 32, 60, now=1000)
    assert signing.verify("key", "a" * 32, token, now=1059)
    assert not signing.verify("key", "a" * 32, token, now=1061)
    assert not signing.verify("other", "a" * 32, token, now=1000)
    assert not signing.verify("key", "b" * 32, token, now=1000)
