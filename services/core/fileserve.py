"""How a file of the platform is served: MIME type and caching by kind; ranges, ETags and 304
from Starlette's FileResponse and StaticFiles. The streaming service's routes and the HLS fast
path (`hls_fastpath`, which the gateway runs too) answer with these, so both agree."""

import os
import stat as stat_module
from pathlib import Path

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles

from services.core.errors import NotFound
from services.core.signing import add_token_to_playlist

# Python's mimetypes guesses .ts as a Qt translation file on Debian: the types are explicit.
MEDIA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".vtt": "text/vtt",
    ".jpg": "image/jpeg",
    ".png": "image/png",
}
IMMUTABLE = "public, max-age=31536000, immutable"
# Starlette's conditional-request check (ETag / If-Modified-Since), reused rather than rewritten.
_CONDITIONAL = StaticFiles(directory=".", check_dir=False)


def serve(
    request: Request,
    path: Path,
    *,
    finished: bool,
    what: str,
    media_type: str | None = None,
    filename: str | None = None,
) -> Response:
    """The file at `path` with type, caching, ETag/304 and byte ranges; NotFound names `what`."""
    stat = regular_file_stat(path)
    if stat is None:
        raise NotFound(f"{what} does not exist")
    response = file_response(
        path, stat, finished=finished, media_type=media_type, filename=filename
    )
    return not_modified(request.headers, response) or response


def file_response(
    path: Path,
    stat: os.stat_result,
    *,
    finished: bool,
    media_type: str | None = None,
    filename: str | None = None,
) -> FileResponse:
    """The 200 (or, given a Range, 206/416) answer for one version of a file.

    It keeps no per-request state: one instance can answer every request for that version.
    """
    return FileResponse(
        path,
        stat_result=stat,
        media_type=media_type or MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        filename=filename,
        headers={"Cache-Control": cache_control(path.suffix, finished)},
    )


def not_modified(headers: Headers, response: Response) -> Response | None:
    """A 304 for `response` when the request's If-None-Match / If-Modified-Since allow it."""
    if _CONDITIONAL.is_not_modified(response.headers, headers):
        return NotModifiedResponse(response.headers)
    return None


def regular_file_stat(path: Path) -> os.stat_result | None:
    """The stat result of `path` if it is a regular file, else None."""
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat if stat_module.S_ISREG(stat.st_mode) else None


def serve_signed_playlist(path: Path, token: str, *, what: str) -> Response:
    """A playlist whose URIs carry the playback token (private playback)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"{what} does not exist") from None
    return signed_playlist(text, token)


def signed_playlist(text: str, token: str) -> Response:
    """The playlist `text` with the playback token on its URIs, for this viewer only."""
    # Tokens differ per viewer and expire: shared caches must not keep the rewritten text.
    return Response(
        add_token_to_playlist(text, token),
        media_type=MEDIA_TYPES[".m3u8"],
        headers={"Cache-Control": "private, no-cache"},
    )


def cache_control(suffix: str, finished: bool) -> str:
    """Cache-Control of a file by its suffix: a playlist may be kept once `finished`."""
    if suffix != ".m3u8":
        # Segments never change once written: a new encode writes a new folder's worth.
        return IMMUTABLE
    return "public, max-age=60" if finished else "no-cache"
