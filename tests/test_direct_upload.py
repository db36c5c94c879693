"""Direct upload URLs on a locked-down platform (UPLOAD_TOKEN set): the admin (or the upload
token's holder) creates one; a client holding nothing else sends one file through it, over tus
or the chunked API, and then the URL is spent. Expiry, the size limit, the origin and the one
upload it opens are each a clear 4xx."""

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from services.core.db import engine
from services.core.models import DirectUpload, utcnow
from services.core.settings import Settings
from services.upload.sweep import sweep_abandoned
from tests.harness import Platform, wait_status

UPLOAD_TOKEN = "upload-token-for-the-test"
PAGE = "https://app.example.com"
TUS = {"Tus-Resumable": "1.0.0"}
STREAM = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose uploading is closed (UPLOAD_TOKEN set)."""
    storage = tmp_path_factory.mktemp("locked") / "storage"
    running = Platform(storage, UPLOAD_TOKEN=UPLOAD_TOKEN).start()
    yield running
    running.drop()


@pytest.fixture(scope="module")
def admin(locked: Platform) -> Iterator[httpx.Client]:
    """The operator's client (admin token)."""
    with locked.client() as http:
        yield http


@pytest.fixture
def anyone(locked: Platform) -> Iterator[httpx.Client]:
    """A client with no token at all, through the gateway."""
    with httpx.Client(base_url=locked.url, timeout=120) as http:
        yield http


def make_direct(admin: httpx.Client, **settings: Any) -> dict[str, Any]:
    """A new direct upload (for PAGE unless told otherwise)."""
    created = admin.post("/upload/direct", json={"cors_origin": PAGE, **settings})
    assert created.status_code == 201, created.text
    made: dict[str, Any] = created.json()
    return made


def tus_create(http: httpx.Client, url: str, length: int, **headers: str) -> httpx.Response:
    name = base64.b64encode(b"clip.mp4").decode()
    sent = {**TUS, "Upload-Length": str(length), "Upload-Metadata": f"filename {name}", **headers}
    return http.post(url, headers=sent)


def tus_send(http: httpx.Client, url: str, data: bytes, **headers: str) -> httpx.Response:
    """Create the upload at the direct URL and send every byte in one PATCH; the PATCH."""
    created = tus_create(http, url, len(data), **headers)
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    return http.patch(
        location, content=data, headers={**TUS, **STREAM, "Upload-Offset": "0", **headers}
    )


def error_of(response: httpx.Response) -> str:
    return str(response.json()["detail"])


def expire(platform: Platform, direct_id: str) -> None:
    """Move a direct upload's expiry into the past, in the platform's own database."""
    platform.execute(
        update(DirectUpload)
        .where(DirectUpload.id == direct_id)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )


# --- creating one ---------------------------------------------------------------------------


def test_uploading_is_closed_without_a_token(anyone: httpx.Client, clips: dict[str, Path]):
    refused = tus_create(anyone, "/files/", clips["tiny"].stat().st_size)
    assert refused.status_code == 401
    form = {"filename": "a.mp4", "total_chunks": 1}
    assert anyone.post("/upload/init", data=form).status_code == 401


def test_the_admin_or_the_upload_token_creates_one_and_no_one_else(locked: Platform):
    body = {"cors_origin": PAGE}
    for token, status in (
        (None, 401),
        ("wrong", 401),
        (UPLOAD_TOKEN, 201),
        (locked.admin_token, 201),
    ):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        made = httpx.post(f"{locked.url}/upload/direct", json=body, headers=headers)
        assert made.status_code == status, (token, made.text)


def test_what_creation_answers(admin: httpx.Client, locked: Platform):
    made = make_direct(admin, max_size=1000, expires_in=120, name="Holiday.mp4", codec="h264")

    token = made["token"]
    assert made["status"] == "waiting" and made["video_id"] is None
    assert made["tus_url"] == f"{locked.url}/files/?direct_token={token}"
    assert made["chunked"]["init_url"] == f"{locked.url}/upload/init?direct_token={token}"
    assert (made["max_size"], made["cors_origin"], made["name"]) == (1000, PAGE, "Holiday.mp4")
    assert made["codec"] == "h264" and made["private"] is False
    state = admin.get(f"/upload/direct/{made['id']}").json()
    assert state["status"] == "waiting" and state["token"] is None, "the token is shown once"


@pytest.mark.parametrize(
    ("settings", "status", "says"),
    [
        ({"expires_in": 10}, 400, "expires_in must be between 60"),
        ({"expires_in": 10**9}, 400, "DIRECT_UPLOAD_MAX_SECONDS"),
        ({"max_size": 0}, 400, "max_size must be between 1"),
        ({"max_size": 2**62}, 400, "MAX_UPLOAD_BYTES"),
        ({"cors_origin": "app.example.com/page"}, 400, "scheme://host[:port]"),
        ({"name": "notes.txt"}, 400, "does not end in a video"),
        ({"codec": "vp9"}, 400, "codec must be one of"),
        ({"private": True}, 409, "PLAYBACK_SIGNING_KEY"),
    ],
)
def test_a_bad_creation_is_a_4xx_saying_what_to_fix(
    admin: httpx.Client, settings: dict[str, Any], status: int, says: str
):
    refused = admin.post("/upload/direct", json={"cors_origin": PAGE, **settings})
    assert refused.status_code == status, refused.text
    assert says in error_of(refused)


# --- using it -------------------------------------------------------------------------------


def test_a_direct_url_takes_one_tus_upload_with_no_other_token_then_is_spent(
    admin: httpx.Client, anyone: httpx.Client, clips: dict[str, Path]
):
    data = clips["tiny"].read_bytes()
    made = make_direct(admin, max_size=len(data), name="From the page.mp4")

    sent = tus_send(anyone, made["tus_url"], data, Origin=PAGE)

    assert sent.status_code == 204, sent.text
    assert sent.headers["access-control-allow-origin"] == PAGE
    assert "access-control-allow-credentials" not in sent.headers
    state = admin.get(f"/upload/direct/{made['id']}").json()
    assert state["status"] == "completed"
    video_id = state["video_id"]
    assert admin.get(f"/videos/{video_id}").json()["filename"] == "From the page.mp4"
    assert wait_status(admin, video_id)["overall"] == "ok"
    kinds = [e["kind"] for e in admin.get(f"/admin/videos/{video_id}/events").json()["events"]]
    assert kinds[:3] == ["upload.created", "upload.completed", "video.queued"]
    assert "video.ready" in kinds

    again = tus_create(anyone, made["tus_url"], len(data), Origin=PAGE)
    head = anyone.head(f"/files/{video_id}?direct_token={made['token']}", headers=TUS)
    assert again.status_code == head.status_code == 410
    assert "has been used" in error_of(again) and video_id in error_of(again)
    assert again.headers["access-control-allow-origin"] == PAGE, "the page can read why"


def test_a_direct_url_takes_one_chunked_upload_too(
    admin: httpx.Client, anyone: httpx.Client, clips: dict[str, Path]
):
    data = clips["tiny"].read_bytes()
    made = make_direct(admin, max_size=len(data))
    urls = made["chunked"]
    half = (len(data) + 1) // 2
    form = {"filename": "chunked.mp4", "total_chunks": 2, "total_size": len(data)}

    init = anyone.post(urls["init_url"], data={**form, "chunk_size": half})
    assert init.status_code == 200, init.text
    upload_id = init.json()["upload_id"]
    for index in (0, 1):
        piece = data[index * half : (index + 1) * half]
        sent = anyone.post(
            urls["chunk_url"],
            data={"upload_id": upload_id, "index": index},
            files={"file": ("blob", piece, "application/octet-stream")},
        )
        assert sent.status_code == 200, sent.text
    state = anyone.get(f"/upload/{upload_id}?direct_token={made['token']}")
    assert state.status_code == 200 and state.json()["missing"] == []
    done = anyone.post(urls["complete_url"], data={"upload_id": upload_id})

    assert done.status_code == 200, done.text
    assert done.json()["video"]["filename"] == "chunked.mp4"
    assert anyone.post(urls["init_url"], data=form).status_code == 410
    assert anyone.post(urls["complete_url"], data={"upload_id": upload_id}).status_code == 410


def test_an_expired_url_is_410(admin: httpx.Client, anyone: httpx.Client, locked: Platform):
    made = make_direct(admin)
    expire(locked, made["id"])

    refused = tus_create(anyone, made["tus_url"], 1000)

    assert refused.status_code == 410
    assert "expired" in error_of(refused)
    assert admin.get(f"/upload/direct/{made['id']}").json()["status"] == "expired"


def test_an_expired_url_stops_an_upload_half_way(
    admin: httpx.Client, anyone: httpx.Client, locked: Platform
):
    made = make_direct(admin)
    created = tus_create(anyone, made["tus_url"], 1000)
    assert created.status_code == 201
    expire(locked, made["id"])

    patch = anyone.patch(
        created.headers["location"],
        content=b"x" * 100,
        headers={**TUS, **STREAM, "Upload-Offset": "0"},
    )

    assert patch.status_code == 410 and "expired" in error_of(patch)


def test_a_file_over_the_size_limit_is_413_before_a_byte_is_sent(
    admin: httpx.Client, anyone: httpx.Client
):
    made = make_direct(admin, max_size=1000)

    over = tus_create(anyone, made["tus_url"], 1001)
    deferred = anyone.post(made["tus_url"], headers={**TUS, "Upload-Defer-Length": "1"})
    chunked = anyone.post(
        made["chunked"]["init_url"],
        data={"filename": "a.mp4", "total_chunks": 1, "total_size": 1001},
    )
    undeclared = anyone.post(
        made["chunked"]["init_url"], data={"filename": "a.mp4", "total_chunks": 1}
    )

    assert over.status_code == chunked.status_code == 413
    assert "at most 1000 bytes" in error_of(over)
    assert deferred.status_code == undeclared.status_code == 400
    assert "declares its size" in error_of(deferred)
    assert tus_create(anyone, made["tus_url"], 1000).status_code == 201, "still unused"


def test_another_origin_is_refused_and_gets_no_cors(admin: httpx.Client, anyone: httpx.Client):
    made = make_direct(admin)
    elsewhere = "https://elsewhere.example"

    refused = tus_create(anyone, made["tus_url"], 1000, Origin=elsewhere)
    preflight = anyone.options(
        made["tus_url"],
        headers={
            "Origin": elsewhere,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "tus-resumable,upload-length,upload-metadata",
        },
    )
    allowed = anyone.options(
        made["tus_url"],
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "tus-resumable,upload-length,upload-metadata",
        },
    )

    assert refused.status_code == 403 and "only https://app.example.com" in error_of(refused)
    assert "access-control-allow-origin" not in refused.headers
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == PAGE
    assert "upload-length" in allowed.headers["access-control-allow-headers"].lower()
    assert "PATCH" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed.headers


def test_a_url_made_without_an_origin_is_for_scripts_only(
    admin: httpx.Client, anyone: httpx.Client
):
    made = make_direct(admin, cors_origin=None)
    refused = tus_create(anyone, made["tus_url"], 1000, Origin=PAGE)
    assert refused.status_code == 403 and "scripts and servers only" in error_of(refused)
    assert tus_create(anyone, made["tus_url"], 1000).status_code == 201


def test_the_token_opens_its_own_upload_only(admin: httpx.Client, anyone: httpx.Client):
    mine, other = make_direct(admin), make_direct(admin)
    theirs = tus_create(anyone, other["tus_url"], 1000).headers["location"].split("?")[0]
    created = tus_create(anyone, mine["tus_url"], 1000)
    assert created.status_code == 201
    token = mine["token"]
    theirs_id = theirs.rsplit("/", 1)[1]

    head = anyone.head(f"{theirs}?direct_token={token}", headers=TUS)
    patch = anyone.patch(
        f"{theirs}?direct_token={token}",
        content=b"x" * 10,
        headers={**TUS, **STREAM, "Upload-Offset": "0"},
    )
    chunk = anyone.post(
        mine["chunked"]["chunk_url"],
        data={"upload_id": theirs_id, "index": 0},
        files={"file": ("blob", b"x" * 10, "application/octet-stream")},
    )
    complete = anyone.post(mine["chunked"]["complete_url"], data={"upload_id": theirs_id})
    second = tus_create(anyone, mine["tus_url"], 1000)
    unknown = tus_create(anyone, "/files/?direct_token=not-a-token", 1000)

    assert head.status_code == patch.status_code == 403
    assert chunk.status_code == complete.status_code == 403
    assert f"opens upload {created.headers['location'].split('/')[-1].split('?')[0]}" in (
        error_of(chunk)
    )
    assert second.status_code == 409 and "already started" in error_of(second)
    assert unknown.status_code == 403 and "not known" in error_of(unknown)
    assert admin.get(f"/upload/direct/{mine['id']}").json()["status"] == "uploading"


def test_the_sweep_forgets_urls_expired_for_as_long_as_an_idle_upload_is_kept(
    admin: httpx.Client, locked: Platform
):
    # Last in the module: a zero expiry sweeps this platform's unfinished uploads too.
    kept, gone = make_direct(admin), make_direct(admin)
    expire(locked, gone["id"])
    settings = Settings().model_copy(
        update={
            "storage_dir": locked.storage,
            "database_url": locked.database_url,
            "upload_expiry_seconds": 0,
        }
    )
    try:
        sweep_abandoned(settings)
    finally:
        engine(settings).dispose()

    assert admin.get(f"/upload/direct/{gone['id']}").status_code == 404
    assert admin.get(f"/upload/direct/{kept['id']}").json()["status"] == "waiting"


async def test_the_access_check_takes_a_worker_thread_only_for_a_direct_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every chunk request runs the check: without a direct token it is a comparison, made on
    # the event loop (no thread hop a chunk); a direct token is a database lookup, made in a
    # worker thread so the loop does not wait on the database.
    import threading

    from starlette.requests import Request

    from services.upload import direct
    from services.upload.direct_routes import require_upload_access

    compared: list[int] = []
    looked_up: list[int] = []
    monkeypatch.setattr(direct, "check_uploader", lambda *_: compared.append(threading.get_ident()))
    monkeypatch.setattr(direct, "admit", lambda *_, **__: looked_up.append(threading.get_ident()))
    for query in (b"upload_id=abc", b"direct_token=xyz&upload_id=abc"):
        scope = {"type": "http", "headers": [], "query_string": query, "path_params": {}}
        await require_upload_access(Request(scope), Settings())

    assert compared == [threading.get_ident()]
    assert len(looked_up) == 1 and looked_up[0] != threading.get_ident()


async def test_a_direct_token_is_looked_up_once_a_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clips: dict[str, Path]
) -> None:
    # The body guard checks a route's token before its first body byte and the route's own
    # dependency checks it too: for a direct token both are one database lookup, shared. A
    # form route (init) has the guard check first, a route reading its own body (a raw
    # chunk) the dependency: each request looks the token up once, off the event loop.
    import asyncio

    from services.core.db import init_db
    from services.core.settings import get_settings
    from services.upload import direct
    from services.upload.app import app

    settings = Settings(storage_dir=tmp_path, upload_token=UPLOAD_TOKEN, admin_token="admin")
    init_db(settings)
    lookups: list[bool] = []  # for each lookup: whether it ran on the event loop
    real = direct._grant

    def counted(*args: Any) -> Any:
        try:
            asyncio.get_running_loop()
            lookups.append(True)
        except RuntimeError:
            lookups.append(False)
        return real(*args)

    monkeypatch.setattr(direct, "_grant", counted)
    monkeypatch.setitem(app.dependency_overrides, get_settings, lambda: settings)
    data = clips["tiny"].read_bytes()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        made = await http.post("/upload/direct", json={}, headers={"Authorization": "Bearer admin"})
        urls = made.json()["chunked"]
        form = {"filename": "a.mp4", "total_chunks": 1, "total_size": len(data)}
        init = await http.post(urls["init_url"], data=form)
        assert init.status_code == 200, init.text
        assert lookups == [False]
        # The URL carries the token in its query: the chunk's fields go beside it.
        sent = await http.post(
            f"{urls['chunk_url']}&upload_id={init.json()['upload_id']}&index=0",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert sent.status_code == 200, sent.text

    assert lookups == [False, False]
