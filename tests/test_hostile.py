"""Hostile paths and ids on every endpoint that takes one: never a 5xx, never a byte outside
the storage folder read, written or deleted."""

import http.client
import itertools
from urllib.parse import urlsplit

import pytest

PAYLOADS = [
    "..",
    "%2e%2e",
    "%252e%252e",
    "..%2f..%2f..%2fCANARY.txt",
    "%2f..%2f..%2fCANARY.txt",
    "%2fetc%2fpasswd",
    "..%5c..%5cCANARY.txt",
    "%5c%5c..%5cCANARY.txt",
    "%2e%2e%2f%2e%2e%2fvideos.db",
    "..%00",
    "%00",
    "a" * 4096,
    "%ef%bc%8e%ef%bc%8e",  # fullwidth full stops: a look-alike of ".."
    "%e2%80%a5",  # two dot leader
    "%c0%ae%c0%ae",  # overlong UTF-8 "."
    "0" * 31 + "%00",
]
TEMPLATES = [
    ("GET", "/upload/{x}"),
    ("GET", "/transcode/status/{x}"),
    ("GET", "/videos/{x}"),
    ("PUT", "/videos/{x}"),
    ("DELETE", "/videos/{x}"),
    ("GET", "/videos/{x}/stopped"),
    ("PUT", "/videos/{x}/stop"),
    ("PUT", "/videos/{x}/resume"),
    ("GET", "/stream/{x}/master.m3u8"),
    ("GET", "/stream/{x}/qualities"),
    ("GET", "/stream/{x}/original"),
    ("GET", "/stream/{v}/{x}/playlist.m3u8"),
    ("GET", "/stream/{v}/360p/{x}"),
    ("GET", "/stream/{v}/{x}/seg_00000.ts"),
    ("GET", "/stream/{v}/{x}"),
    ("GET", "/stream/{v}/360p/{x}/{x}/CANARY.txt"),
    ("DELETE", "/admin/videos/{x}"),
    ("POST", "/admin/videos/{x}/stop"),
    ("POST", "/admin/videos/{x}/resume"),
    ("GET", "/admin/videos/{x}/status"),
]
SECRET = b"canary-4f1d9c: this file lies outside the storage folder"


def raw_request(
    base: str, method: str, path: str, body: bytes = b"", ctype: str = "", token: str = ""
):
    """Send `path` byte for byte (no client-side normalising of dots or escapes)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        if ctype:
            conn.putheader("Content-Type", ctype)
        if token:
            # With the admin token, hostile ids get past access control to the validation.
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def canary(platform):
    path = platform.storage.parent / "CANARY.txt"
    path.write_bytes(SECRET)
    before = sorted(p.name for p in platform.storage.iterdir())
    yield path
    assert path.read_bytes() == SECRET, "a file outside storage was written"
    assert sorted(p.name for p in platform.storage.iterdir()) == before


@pytest.mark.parametrize("target", ["gateway", "services"])
def test_hostile_paths_are_4xx_and_touch_nothing_outside_storage(
    platform, transcoded, canary, target
):
    video_id = transcoded["small"]
    original = f"originals/{video_id}/source"
    before = platform.stored(original)
    assert before, "the original is stored"
    for (method, template), payload in itertools.product(TEMPLATES, PAYLOADS):
        path = template.format(x=payload, v=video_id)
        base = platform.url if target == "gateway" else _service_for(platform, path)
        status, body = raw_request(base, method, path, token=platform.admin_token)
        assert 400 <= status < 500, (method, path, status, body[:200])
        assert SECRET not in body and b"SQLite format 3" not in body, (method, path)
        assert b"root:x:0:0" not in body, (method, path)
    assert platform.stored(original) == before
    assert platform.stored(f"hls/{video_id}/master.m3u8") is not None


def test_hostile_ids_in_form_and_json_bodies_are_4xx(platform, canary):
    for payload in ["../../CANARY", "..\\..\\x", "/etc/passwd", "a" * 5000, "\u2025", "0" * 32]:
        for path in ("/upload/chunk", "/upload/complete"):
            status, body = raw_request(
                platform.url,
                "POST",
                path,
                f"upload_id={payload}&index=0".encode(),
                "application/x-www-form-urlencoded",
                token=platform.admin_token,
            )
            assert 400 <= status < 500, (path, payload, status, body[:200])
        for path in ("/transcode/start", "/transcode/resume"):
            status, body = raw_request(
                platform.url,
                "POST",
                path,
                b'{"upload_id": "%s"}' % payload.encode("unicode_escape"),
                "application/json",
                token=platform.admin_token,
            )
            assert 400 <= status < 500, (path, payload, status, body[:200])


def test_filename_is_a_label_never_a_path_or_an_option(client, clips, platform):
    from tests.harness import upload, wait_status

    hostile = clips["small"].parent / "-i %2e%2e etc passwd .mp4"
    hostile.write_bytes(clips["small"].read_bytes())
    video_id, done = upload(client, hostile, chunk_size=1 << 20)
    assert done is not None and done.status_code == 200, done.text
    assert wait_status(client, video_id)["overall"] == "ok"
    assert client.get(f"/videos/{video_id}").json()["filename"] == hostile.name
    assert platform.keys(f"originals/{video_id}/") == [f"originals/{video_id}/source"]


def _service_for(platform, path: str) -> str:
    prefix = path.split("/")[1]
    name = {
        "upload": "upload",
        "transcode": "transcoding",
        "videos": "metadata",
        "stream": "streaming",
        "admin": "admin",
    }[prefix]
    return platform.service_url(name)


def test_cors_opens_playback_to_any_origin_and_the_api_to_the_gateway_origin_only(
    platform, transcoded
):
    import httpx

    url = f"{platform.service_url('streaming')}/stream/{transcoded['small']}/master.m3u8"
    own = f"http://localhost:{platform.ports['gateway']}"
    for origin in (own, "https://elsewhere.example"):
        playback = httpx.get(url, headers={"Origin": origin})
        assert playback.headers["access-control-allow-origin"] == "*"
        assert "content-range" in playback.headers["access-control-expose-headers"].lower()
        assert "access-control-allow-credentials" not in playback.headers
    api = f"{platform.service_url('metadata')}/videos/{transcoded['small']}"
    allowed = httpx.get(api, headers={"Origin": own})
    assert allowed.headers["access-control-allow-origin"] == own
    other = httpx.get(api, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = httpx.options(api, headers={"Origin": own, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
