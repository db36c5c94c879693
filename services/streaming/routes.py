"""HLS delivery: master and rung playlists, segments, the original, other assets."""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.responses import FileResponse, Response

from services.core import ids, signing
from services.core.deps import SessionDep, SettingsDep, StorageDep
from services.core.errors import Forbidden, NotFound
from services.core.fileserve import serve, serve_signed_playlist
from services.core.models import Status
from services.core.videos import get_video

router = APIRouter(tags=["streaming"])


def playback_guard(
    video_id: str,
    settings: SettingsDep,
    token: Annotated[
        str | None, Query(max_length=128, description="Playback token (private playback)")
    ] = None,
) -> str | None:
    """With PLAYBACK_SIGNING_KEY set, only a valid, unexpired token for this video opens it."""
    key = settings.playback_signing_key
    if not key:
        return None
    if not signing.verify(key, ids.video_id(video_id), token):
        raise Forbidden(
            f"video {video_id} is private: a valid, unexpired playback token is needed "
            "(?token=..., issued by POST /admin/videos/{id}/playback_token)"
        )
    return token


PlaybackToken = Annotated[str | None, Depends(playback_guard)]


def _playlist(
    request: Request, path: Path, token: str | None, *, finished: bool, what: str
) -> Response:
    if token:
        return serve_signed_playlist(path, token, what=what)
    return serve(request, path, finished=finished, what=what)


def file_route(path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """GET and HEAD (players and CDNs probe with HEAD) for a route that answers with a file."""
    return router.api_route(path, methods=["GET", "HEAD"], response_class=FileResponse)


class Qualities(BaseModel):
    video_id: str
    status: str
    qualities: list[str]


@file_route("/stream/{video_id}/master.m3u8")
def master(video_id: str, storage: StorageDep, request: Request, token: PlaybackToken) -> Response:
    """The multivariant playlist (exists from the first playable chunk on)."""
    path = storage.master_path(video_id)
    finished = storage.complete_marker(video_id).exists()
    return _playlist(request, path, token, finished=finished, what=f"master of {video_id}")


@router.get("/stream/{video_id}/qualities", response_model=Qualities)
def qualities(video_id: str, session: SessionDep, token: PlaybackToken) -> Qualities:
    """The rungs this video has."""
    video = get_video(session, video_id=video_id)
    return Qualities(video_id=video.id, status=video.status, qualities=list(video.qualities or []))


@file_route("/stream/{video_id}/original")
def original(
    video_id: str, session: SessionDep, storage: StorageDep, request: Request, token: PlaybackToken
) -> Response:
    """The uploaded file as it was (byte ranges supported)."""
    video = get_video(session, video_id=video_id)
    if video.status == Status.UPLOADING:
        raise NotFound(f"video {video_id} is still uploading: its original is not complete")
    return serve(
        request,
        storage.source_path(video.id),
        finished=True,
        what=f"the original of {video_id}",
        media_type="application/octet-stream",
        filename=download_name(video.filename),
    )


def download_name(label: str, suffix: str = "") -> str:
    """A file name for Content-Disposition from the video's label (printable, bounded)."""
    stem, dot, _ = label.rpartition(".")
    base = stem if dot and suffix else label
    name = re.sub(r"[^\w.\- ()]", "_", base)[:120] or "video"
    return f"{name}{suffix}"


@file_route("/stream/{video_id}/{quality}/playlist.m3u8")
def playlist(
    video_id: str, quality: str, storage: StorageDep, request: Request, token: PlaybackToken
) -> Response:
    """A rung's media playlist."""
    path = storage.playlist_path(video_id, quality)
    # Until the presentation is final, an EVENT playlist grows: caches must ask again.
    finished = storage.complete_marker(video_id).exists()
    return _playlist(request, path, token, finished=finished, what=f"{quality} of {video_id}")


@file_route("/stream/{video_id}/{quality}/{segment}")
def segment(
    video_id: str,
    quality: str,
    segment: str,
    storage: StorageDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """A media segment of a rung."""
    path = storage.segment_path(video_id, quality, segment)
    # Segments are immutable whatever this says; the I-frame playlist grows until complete.
    finished = storage.complete_marker(video_id).exists()
    what = f"{segment} of {quality} of {video_id}"
    if path.suffix == ".m3u8":
        return _playlist(request, path, token, finished=finished, what=what)
    return serve(request, path, finished=finished, what=what)


@file_route("/stream/{video_id}/captions/{caption_id}/{name}")
def caption_file(
    video_id: str,
    caption_id: str,
    name: str,
    storage: StorageDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """A caption's WebVTT media playlist (playlist.m3u8) or one of its segments (seg_NNNNN.vtt)."""
    path = storage.caption_file_path(video_id, caption_id, name)
    finished = storage.complete_marker(video_id).exists()
    what = f"{name} of caption {caption_id} of {video_id}"
    if path.suffix == ".m3u8":
        # Private playback: the segments' URIs get the token, as in every playlist.
        return _playlist(request, path, token, finished=finished, what=what)
    return serve(request, path, finished=finished, what=what)


@file_route("/stream/{video_id}/{asset_path:path}")
def asset(
    video_id: str, asset_path: str, storage: StorageDep, request: Request, token: PlaybackToken
) -> Response:
    """Any other file the platform produced for this video (below its HLS folder)."""
    ids.video_id(video_id)
    if not asset_path:
        raise NotFound("name an asset: /stream/{video_id}/{asset}")
    path = storage.asset_path(video_id, asset_path)
    finished = storage.complete_marker(video_id).exists()
    return serve(request, path, finished=finished, what=f"asset {asset_path[:64]} of {video_id}")
