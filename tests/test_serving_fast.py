"""The fast path of HLS delivery (services/core/hls_fastpath.py), in the streaming service and
in the gateway: the same answers as the routes (types, caching, ETag/304, ranges, tokens),
segments handed to the server whole, everything else left to the app; and the real servers
(granian, as the launcher starts them) sending the files."""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.app import build_app, serving_app
from services import launcher
from services.core import hls_fastpath, ids, signing
from services.core.app import create_app
from services.core.db import init_db
from services.core.settings import Settings, get_settings
from services.core.storage import Storage
from services.streaming.routes import router
from tests.harness import ROOT, Platform, free_ports

KEY = "k" * 32
PATHSEND = "http.response.pathsend"
CANARY = b"canary-7c2e: outside the storage folder"


@dataclass
class Answer:
    """What an ASGI app sent for one request."""

    status: int
    headers: dict[str, str]
    body: bytes
    pathsend: str | None  # the file handed to the server, if it was


@dataclass
class Video:
    """A video's files as the transcoder leaves them, in a storage folder of its own."""

    storage: Storage
    video_id: str

    def rung(self, name: str) -> Path:
        return self.storage.rung_dir(self.video_id, name)

    def url(self, relative: str) -> str:
        return f"/stream/{self.video_id}/{relative}"


def render_rung(folder: Path, *, fmp4: bool = False) -> None:
    """Two 1 s segments and their VOD playlist, muxed by ffmpeg's HLS muxer."""
    folder.mkdir(parents=True)
    suffix = "m4s" if fmp4 else "ts"
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    argv += ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]
    argv += ["-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod"]
    if fmp4:
        argv += ["-hls_segment_type", "fmp4"]
    argv += ["-hls_segment_filename", str(folder / f"seg_%05d.{suffix}")]
    subprocess.run([*argv, str(folder / "playlist.m3u8")], check=True, timeout=60)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Video:
    """A finished video: a TS rung, an fMP4 rung, an I-frame playlist, the master, the marker."""
    root = tmp_path_factory.mktemp("serving") / "storage"
    storage = Storage(root)
    storage.ensure_layout()
    made = Video(storage, ids.new_video_id())
    render_rung(made.rung("360p"))
    render_rung(made.rung("240p"), fmp4=True)
    (made.rung("360p") / "iframes.m3u8").write_text(
        "#EXTM3U\n#EXT-X-I-FRAMES-ONLY\n#EXT-X-BYTERANGE:188@0\nseg_00000.ts\n#EXT-X-ENDLIST\n"
    )
    storage.master_path(made.video_id).write_text(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x240\n360p/playlist.m3u8\n"
    )
    storage.complete_marker(made.video_id).touch()
    (root.parent / "CANARY.txt").write_bytes(CANARY)
    return made


class Reached:
    """Middleware noting every request that got past the fast path into the app."""

    def __init__(self, app: ASGIApp, *, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


def settings_for(storage: Storage, **changes: object) -> Settings:
    return Settings().model_copy(update={"storage_dir": storage.root, **changes})


def streaming(storage: Storage, **changes: object) -> tuple[hls_fastpath.HlsFastPath, list[str]]:
    """The streaming service's app (routes + fast path) on `storage`; and what reached the API."""
    api = create_app("streaming", [router])
    seen: list[str] = []
    api.add_middleware(Reached, seen=seen)
    api.dependency_overrides[get_settings] = lambda: settings_for(storage, **changes)
    return hls_fastpath.wrap(api, service="streaming"), seen


async def call(
    app: ASGIApp,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    query: str = "",
    pathsend: bool = True,
) -> Answer:
    """One request to `app`, as a server offering the pathsend extension sends it."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8004),
        "extensions": {PATHSEND: {}} if pathsend else {},
        "state": {},
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    files = [m["path"] for m in sent if m["type"] == PATHSEND]
    head = {k.decode(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], head, body, files[0] if files else None)


HEADERS = (
    "content-type",
    "cache-control",
    "etag",
    "last-modified",
    "accept-ranges",
    "vary",
    "access-control-allow-origin",
    "access-control-expose-headers",
)


@pytest.mark.parametrize(
    ("relative", "media_type"),
    [
        ("master.m3u8", "application/vnd.apple.mpegurl"),
        ("360p/playlist.m3u8", "application/vnd.apple.mpegurl"),
        ("360p/iframes.m3u8", "application/vnd.apple.mpegurl"),
        ("360p/seg_00001.ts", "video/mp2t"),
        ("240p/init.mp4", "video/mp4"),
        ("240p/seg_00000.m4s", "video/iso.segment"),
    ],
)
async def test_fast_answers_are_the_routes_answers(video: Video, relative: str, media_type: str):
    app, seen = streaming(video.storage)
    fast = await call(app, video.url(relative), pathsend=False)
    routes = await call(app.app, video.url(relative), pathsend=False)

    assert seen == [video.url(relative)], "only the direct call reached the routes"
    assert fast.status == routes.status == 200
    assert fast.headers["content-type"] == media_type
    assert {h: fast.headers.get(h) for h in HEADERS} == {h: routes.headers.get(h) for h in HEADERS}
    assert (
        fast.body == routes.body == (video.storage.hls_dir(video.video_id) / relative).read_bytes()
    )


async def test_a_segment_is_handed_to_the_server_whole(video: Video):
    app, seen = streaming(video.storage)

    answer = await call(app, video.url("360p/seg_00000.ts"))

    assert answer.pathsend == str(video.rung("360p") / "seg_00000.ts")
    assert answer.body == b""
    assert answer.headers["content-length"] == str(
        (video.rung("360p") / "seg_00000.ts").stat().st_size
    )
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert seen == []


async def test_other_files_are_left_to_the_app_which_streams_them(video: Video):
    app, seen = streaming(video.storage)
    asset = video.storage.hls_dir(video.video_id) / "thumbs" / "sheet" / "sprites.vtt"
    asset.parent.mkdir(parents=True, exist_ok=True)
    asset.write_text("WEBVTT\n")

    answer = await call(app, video.url("thumbs/sheet/sprites.vtt"))

    # The app's own routes send through Python, never by pathsend: its metrics count the bytes.
    assert seen == [video.url("thumbs/sheet/sprites.vtt")]
    assert (answer.status, answer.body, answer.pathsend) == (200, b"WEBVTT\n", None)
    assert answer.headers["content-type"].startswith("text/vtt")


async def test_playlist_caching_follows_the_presentation_and_its_growth(tmp_path: Path):
    storage = Storage(tmp_path / "storage")
    growing = Video(storage, ids.new_video_id())
    rung = growing.rung("360p")
    rung.mkdir(parents=True)
    first = "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXTINF:2.0,\nseg_00000.ts\n"
    (rung / "playlist.m3u8").write_text(first)
    app, _ = streaming(storage)

    event = await call(app, growing.url("360p/playlist.m3u8"))
    assert (event.headers["cache-control"], event.body.decode()) == ("no-cache", first)

    grown = first + "#EXTINF:2.0,\nseg_00001.ts\n#EXT-X-ENDLIST\n"
    replacement = rung / ".playlist.tmp"
    replacement.write_text(grown)
    os.replace(replacement, rung / "playlist.m3u8")  # as the platform writes it: atomically
    storage.complete_marker(growing.video_id).touch()

    final = await call(app, growing.url("360p/playlist.m3u8"))
    assert (final.headers["cache-control"], final.body.decode()) == ("public, max-age=60", grown)
    assert final.headers["etag"] != event.headers["etag"]


async def test_kept_responses_are_bounded(video: Video, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hls_fastpath, "RESPONSES_KEPT", 2)
    monkeypatch.setattr(hls_fastpath, "BODIES_KEPT_BYTES", 400)
    app, _ = streaming(video.storage)
    relatives = ["360p/playlist.m3u8", "240p/playlist.m3u8", "master.m3u8", "360p/iframes.m3u8"]

    for relative in relatives * 2:
        answer = await call(app, video.url(relative))
        assert answer.body == (video.storage.hls_dir(video.video_id) / relative).read_bytes()
        assert len(app.responses) <= 2 and app.kept_bytes <= 400


@pytest.mark.parametrize("relative", ["360p/seg_00000.ts", "360p/playlist.m3u8"])
async def test_byte_ranges_are_answered(video: Video, relative: str):
    app, seen = streaming(video.storage)
    data = (video.storage.hls_dir(video.video_id) / relative).read_bytes()

    part = await call(app, video.url(relative), headers={"Range": "bytes=10-29"})
    tail = await call(app, video.url(relative), headers={"Range": "bytes=-5"})
    beyond = await call(app, video.url(relative), headers={"Range": "bytes=999999999-"})

    assert (part.status, part.body) == (206, data[10:30])
    assert part.headers["content-range"] == f"bytes 10-29/{len(data)}"
    assert (tail.status, tail.body) == (206, data[-5:])
    assert beyond.status == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert seen == []


@pytest.mark.parametrize("relative", ["360p/seg_00000.ts", "master.m3u8"])
async def test_revalidation_is_a_304(video: Video, relative: str):
    app, seen = streaming(video.storage)
    first = await call(app, video.url(relative))

    by_etag = await call(app, video.url(relative), headers={"If-None-Match": first.headers["etag"]})
    by_date = await call(
        app, video.url(relative), headers={"If-Modified-Since": first.headers["last-modified"]}
    )
    changed = await call(app, video.url(relative), headers={"If-None-Match": '"other"'})

    assert by_etag.status == by_date.status == 304
    assert by_etag.body == b"" and by_etag.headers["etag"] == first.headers["etag"]
    assert by_etag.headers["access-control-allow-origin"] == "*"
    assert changed.status == 200
    assert seen == []


async def test_head_sends_the_headers_only(video: Video):
    app, _ = streaming(video.storage)
    segment = video.rung("360p") / "seg_00000.ts"

    for relative in ("360p/seg_00000.ts", "360p/playlist.m3u8"):
        answer = await call(app, video.url(relative), method="HEAD")
        assert answer.status == 200 and answer.body == b"" and answer.pathsend is None
    answer = await call(app, video.url("360p/seg_00000.ts"), method="HEAD")
    assert answer.headers["content-length"] == str(segment.stat().st_size)


async def test_private_playback_keeps_its_token_rules(video: Video):
    app, seen = streaming(video.storage, playback_signing_key=KEY)
    token = signing.sign(KEY, video.video_id, 600)
    other = signing.sign(KEY, ids.new_video_id(), 600)
    expired = signing.sign(KEY, video.video_id, 60, now=time.time() - 120)
    segment = video.url("360p/seg_00000.ts")

    for query in ("", "token=123.abc", f"token={other}", f"token={expired}"):
        assert (await call(app, segment, query=query)).status == 403, query
    assert len(seen) == 4, "refusals are the routes' (the catalogue's 403)"

    allowed = await call(app, segment, query=f"token={token}")
    playlist = await call(app, video.url("360p/playlist.m3u8"), query=f"token={token}")

    assert allowed.status == 200 and allowed.pathsend is not None
    assert playlist.status == 200
    assert playlist.headers["cache-control"] == "private, no-cache"
    assert f"seg_00000.ts?token={token}" in playlist.body.decode()
    assert len(seen) == 4


async def test_cross_origin_requests_are_answered_fast_for_any_origin(video: Video):
    app, seen = streaming(video.storage)

    for origin in ("http://localhost:8000", "https://elsewhere.example"):
        answer = await call(app, video.url("360p/seg_00000.ts"), headers={"Origin": origin})
        assert answer.status == 200 and answer.pathsend is not None
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
    assert seen == []


async def test_listed_playback_origins_are_named_by_the_routes(video: Video):
    app, seen = streaming(video.storage, playback_origins="https://a.example")
    segment = video.url("360p/seg_00000.ts")

    listed = await call(app, segment, headers={"Origin": "https://a.example"})
    other = await call(app, segment, headers={"Origin": "https://b.example"})
    plain = await call(app, segment)

    assert listed.headers["access-control-allow-origin"] == "https://a.example"
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in plain.headers
    assert listed.headers["vary"] == other.headers["vary"] == plain.headers["vary"] == "Origin"
    assert seen == [segment, segment], "requests with an Origin went to the routes"


@pytest.mark.parametrize(
    "path",
    [
        "/stream/{v}/360p/../../../CANARY.txt",
        "/stream/{v}/../../CANARY.txt",
        "/stream/{v}/360p/%2e%2e/%2e%2e/%2e%2e/CANARY.txt",
        "/stream/{v}/..%2f..%2fCANARY.txt",
        "/stream/{v}/360p/seg_00000.ts/..",
        "/stream/{v}/360p/seg_00000.ts\x00",
        "/stream/{v}/360P/seg_00000.ts",
        "/stream/{v}/360p/.complete",
        "/stream/../{v}/master.m3u8",
    ],
)
async def test_other_paths_are_left_to_the_routes(video: Video, path: str):
    app, seen = streaming(video.storage)
    target = path.format(v=video.video_id)

    answer = await call(app, target)

    assert 400 <= answer.status < 500, (target, answer.status)
    assert CANARY not in answer.body
    assert seen == [target]


async def test_missing_files_are_the_routes_404(video: Video):
    app, seen = streaming(video.storage)
    unknown = ids.new_video_id()

    missing = await call(app, video.url("360p/seg_00042.ts"))
    no_video = await call(app, f"/stream/{unknown}/master.m3u8")

    assert missing.status == no_video.status == 404
    assert len(seen) == 2


async def test_metrics_count_what_the_fast_path_sent(video: Video):
    app, _ = streaming(video.storage)
    segment = video.rung("360p") / "seg_00001.ts"

    await call(app, video.url("360p/seg_00001.ts"))
    metrics = (await call(app, "/metrics")).body.decode()

    route = 'route="/stream/{video_id}/{quality}/{segment}",service="streaming",status="200"'
    assert any(route in line for line in metrics.splitlines() if "requests_total" in line)
    sent = next(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('http_response_bytes_total{kind="segment",service="streaming"}')
    )
    assert sent >= segment.stat().st_size


def gateway_for(storage: Storage, streaming_url: str) -> tuple[hls_fastpath.HlsFastPath, FastAPI]:
    app = build_app()
    settings = settings_for(storage, streaming_url=streaming_url)
    app.dependency_overrides[get_settings] = lambda: settings
    return serving_app(app), app


async def test_the_gateway_serves_hls_files_from_the_shared_storage(video: Video):
    down = f"http://127.0.0.1:{free_ports(1)[0]}"  # the streaming service is not even running
    app, inner = gateway_for(video.storage, down)

    async with inner.router.lifespan_context(inner):
        segment = await call(app, video.url("360p/seg_00000.ts"))
        master = await call(app, video.url("master.m3u8"))
        missing = await call(app, video.url("360p/seg_00042.ts"))

    assert segment.status == 200 and segment.pathsend is not None
    assert master.status == 200 and b"360p/playlist.m3u8" in master.body
    # Not in the gateway's storage folder: relayed to the streaming service (here: down).
    assert missing.status == 502


# --- the real servers, started as the launcher starts them -----------------------------------


def start_server(name: str, settings: Settings, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`name`'s server under the launcher's own command line."""
    log_config = str(launcher.log_config_file(settings))
    argv = launcher.server_argv(name, launcher.APPS[name], settings, log_config)
    return subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)


def wait_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url}: the server exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.fixture(scope="module")
def servers(video: Video, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The streaming service on the video's storage, a gateway sharing it and a gateway with a
    storage folder of its own (which must relay), each under the launcher's command line."""
    elsewhere = tmp_path_factory.mktemp("gateway-elsewhere")
    names = ("streaming", "gateway", "relaying")
    ports = dict(zip(names, free_ports(3), strict=True))
    processes = []
    for name, storage in (
        ("streaming", video.storage.root),
        ("gateway", video.storage.root),
        ("relaying", elsewhere),
    ):
        service = "streaming" if name == "streaming" else "gateway"
        settings = Settings(storage_dir=storage, **{f"{service}_port": ports[name]})
        # Once, before the workers start (as the launcher does): they would race to migrate.
        init_db(settings)
        env = {
            **os.environ,
            "STORAGE_DIR": str(storage),
            "STREAMING_URL": f"http://127.0.0.1:{ports['streaming']}",
        }
        processes.append(start_server(service, settings, env))
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        for url, process in zip(urls.values(), processes, strict=True):
            wait_up(url, process)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.parametrize("server", ["streaming", "gateway", "relaying"])
def test_real_servers_send_whole_files_ranges_and_304s(video: Video, servers, server: str):
    base = servers[server]
    segment = (video.rung("360p") / "seg_00001.ts").read_bytes()
    url = base + video.url("360p/seg_00001.ts")

    whole = httpx.get(url)
    part = httpx.get(url, headers={"Range": "bytes=188-375"})
    again = httpx.get(url, headers={"If-None-Match": whole.headers["etag"]})
    head = httpx.head(url)
    playlist = httpx.get(base + video.url("360p/playlist.m3u8"))

    assert (whole.status_code, whole.content) == (200, segment)
    assert whole.headers["content-type"] == "video/mp2t"
    assert (part.status_code, part.content) == (206, segment[188:376])
    assert again.status_code == 304
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(segment))
    assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert playlist.content == (video.rung("360p") / "playlist.m3u8").read_bytes()
    # Asked for again and again, the segment comes from memory (segment_cache.py): the same.
    for _ in range(6):
        hot = httpx.get(url)
        assert (hot.status_code, hot.content) == (200, segment)
        assert hot.headers["etag"] == whole.headers["etag"]
        time.sleep(0.05)


def test_real_servers_refuse_what_the_routes_refuse(video: Video, servers):
    for base in servers.values():
        assert httpx.get(base + video.url("360p/seg_00042.ts")).status_code == 404
        assert httpx.get(base + video.url("360p/passwd")).status_code == 400
        escape = httpx.get(base + video.url("360p/%2e%2e/%2e%2e/%2e%2e/CANARY.txt"))
        assert 400 <= escape.status_code < 500 and CANARY not in escape.content


def test_file_services_run_under_granian_the_others_under_uvicorn():
    settings = Settings()
    argv = {
        name: launcher.server_argv(name, app, settings, "log.json")
        for name, app in launcher.APPS.items()
    }

    assert {name for name, a in argv.items() if a[2] == "granian"} == {"streaming", "gateway"}
    assert {name for name, a in argv.items() if a[2] == "uvicorn"} == {
        "upload",
        "transcoding",
        "metadata",
        "admin",
    }
    assert "--no-access-log" in argv["upload"]
    assert argv["streaming"][argv["streaming"].index("--port") + 1] == str(settings.streaming_port)
    for name in ("streaming", "gateway"):
        for option in ("--backlog", "--backpressure"):
            assert argv[name][argv[name].index(option) + 1] == str(settings.serve_connections)


def _group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_kill_9_of_a_granian_server_takes_its_workers_along(own_platform: Platform):
    port = str(own_platform.ports["streaming"])
    main = next(
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and f" --port {port} " in _cmdline(entry)
        and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        == own_platform.process.pid  # type: ignore[union-attr]
    )
    workers = [pid for pid in _group(main) if pid != main]
    assert workers, "granian runs its app in worker processes"

    os.kill(main, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while _group(main) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group(main) == [], "the dead server's workers were left running"
    wait_up(own_platform.service_url("streaming"), own_platform.process)  # type: ignore[arg-type]


def _cmdline(entry: Path) -> str:
    try:
        return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
