"""A second origin for the browser tests: a tiny static server on another local port, serving
small test pages and the players' and uploader's files from the npm registry (installed in
tests/browser/players/node_modules by `scripts/install.sh --test`, never copied).

A page loaded from it that talks to the platform is a page of another site as far as the
browser is concerned: every request it makes to the gateway or a service is cross-origin.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.harness import free_ports

PLAYERS = Path(__file__).parent / "players" / "node_modules"
# Name under /vendor/ -> the npm package's distributed file.
VENDOR = {
    "hls.min.js": PLAYERS / "hls.js/dist/hls.min.js",
    "shaka-player.compiled.js": PLAYERS / "shaka-player/dist/shaka-player.compiled.js",
    "video.min.js": PLAYERS / "video.js/dist/video.min.js",
    "video-js.min.css": PLAYERS / "video.js/dist/video-js.min.css",
    "uppy.min.mjs": PLAYERS / "uppy/dist/uppy.min.mjs",
}
TYPES = {".js": "application/javascript", ".mjs": "application/javascript", ".css": "text/css"}

# Each player page exposes start(src): playback from script; failures land in window.failures.
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>{head}</head>
<body><video id="video" muted playsinline controls width="480"></video>
<script>window.failures = [];</script>
{body}
</body></html>
"""
PAGES = {
    "/hls.html": _PAGE.format(
        title="hls.js",
        head="",
        body="""<script src="/vendor/hls.min.js"></script>
<script>
window.start = (src) => {
  const hls = new Hls();
  hls.on(Hls.Events.ERROR, (_, data) => {
    if (data.fatal) window.failures.push(`${data.type}: ${data.details}`);
  });
  hls.loadSource(src);
  hls.attachMedia(document.getElementById("video"));
  hls.on(Hls.Events.MANIFEST_PARSED, () => document.getElementById("video").play());
};
</script>""",
    ),
    "/shaka.html": _PAGE.format(
        title="Shaka Player",
        head="",
        body="""<script src="/vendor/shaka-player.compiled.js"></script>
<script>
window.start = async (src) => {
  shaka.polyfill.installAll();
  const video = document.getElementById("video");
  const player = new shaka.Player();
  player.addEventListener("error", (event) => window.failures.push(`shaka ${event.detail.code}`));
  try {
    await player.attach(video);
    await player.load(src);
    await video.play();
  } catch (error) {
    window.failures.push(`shaka ${error.code || error.message}`);
  }
};
</script>""",
    ),
    "/videojs.html": _PAGE.format(
        title="video.js",
        head='<link rel="stylesheet" href="/vendor/video-js.min.css">',
        body="""<script src="/vendor/video.min.js"></script>
<script>
window.start = (src) => {
  const player = videojs("video");
  player.on("error", () => window.failures.push(`video.js ${JSON.stringify(player.error())}`));
  player.src({ src, type: "application/x-mpegURL" });
  player.play();
};
</script>""",
    ),
    "/uppy.html": """<!doctype html>
<html><head><meta charset="utf-8"><title>Uppy</title></head>
<body>
<script type="module">
import { Tus, Uppy } from "/vendor/uppy.min.mjs";
window.failures = [];
window.finished = null;
// upload(endpoint, name, bytes): Uppy's Tus plugin sends the file to a direct upload URL.
window.upload = (endpoint, name, bytes) => {
  const uppy = new Uppy({ autoProceed: false }).use(Tus, { endpoint, chunkSize: 256 * 1024 });
  uppy.on("upload-error", (file, error) => window.failures.push(String(error)));
  uppy.on("complete", (result) => {
    window.finished = result.successful.map((file) => file.response.uploadURL);
  });
  uppy.addFile({ name, type: "video/mp4", data: new Blob([bytes], { type: "video/mp4" }) });
  return uppy.upload();
};
window.ready = true;
</script>
</body></html>
""",
}


class _Handler(BaseHTTPRequestHandler):
    """GET of a page or a vendor file; nothing else."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in PAGES:
            self._send(PAGES[path].encode(), "text/html; charset=utf-8")
            return
        name = path.removeprefix("/vendor/")
        file = VENDOR.get(name)
        if not path.startswith("/vendor/") or file is None or not file.is_file():
            self.send_error(404, f"no {path}: run scripts/install.sh --test (npm ci)")
            return
        self._send(file.read_bytes(), TYPES.get(file.suffix, "application/octet-stream"))

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test's output is about the platform."""


@contextmanager
def other_origin() -> Iterator[str]:
    """Serve the test pages on a free local port; yields the origin (`http://127.0.0.1:N`)."""
    (port,) = free_ports(1)
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
