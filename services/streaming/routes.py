"""HLS delivery: master and rung playlists, segments, the original, other assets."""

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import FileResponse, Response

from services.core import ids
from services.core.deps import SessionDep, StorageDep
from services.core.errors import NotFound
from services.core.models import Status
from services.core.videos import get_video
from services.streaming.files import serve

router = APIRouter(tags=["streaming"])


def file_route(path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """GET and HEAD (players and CDNs probe with HEAD) for a route that answers with a file."""
    return router.api_route(path, methods=["GET", "HEAD"], response_class=FileResponse)


class Qualities(BaseModel):
    video_id: str
    status: str
    qualities: list[str]


@file_route("/stream/{video_id}/master.m3u8")
def master(video_id: str, storage: StorageDep, request: Request) -> Response:
    """The multivariant playlist (exists from the first playable chunk on)."""
    path = storage.master_path(video_id)
    finished = storage.complete_marker(video_id).exists()
    return serve(request, path, finished=finished, what=f"master playlist of {video_id}")


@router.get("/stream/{video_id}/qualities", response_model=Qualities)
def qualities(video_id: str, session: SessionDep) -> Qualities:
    """The rungs this video has."""
    video = get_video(session, video_id=video_id)
    return Qualities(video_id=video.id, status=video.status, qualities=list(video.qualities or []))


@file_route("/stream/{video_id}/original")
def original(video_id: str, session: SessionDep, storage: StorageDep, request: Request) -> Response:
    """The uploaded file as it was (byte ranges supported)."""
    video = get_video(session, video_id=video_id)
    if video.status == Status.UPLOADING:
        raise NotFound(f"video {video_id} is still uploading")
    return serve(
        request,
        storage.source_path(video.id),
        finished=True,
        what=f"the original of {video_id}",
        media_type="application/octet-stream",
        filename=_download_name(video.filename),
    )


def _download_name(label: str) -> str:
    # A label, not a path: keep it printable for Content-Disposition.
    return re.sub(r"[^\w.\- ()]", "_", label)[:120] or "original"


@file_route("/stream/{video_id}/{quality}/playlist.m3u8")
def playlist(video_id: str, quality: str, storage: StorageDep, request: Request) -> Response:
    """A rung's media playlist."""
    path = storage.playlist_path(video_id, quality)
    # Until the presentation is final, an EVENT playlist grows: caches must ask again.
    finished = storage.complete_marker(video_id).exists()
    return serve(request, path, finished=finished, what=f"quality {quality} of {video_id}")


@file_route("/stream/{video_id}/{quality}/{segment}")
def segment(
    video_id: str, quality: str, segment: str, storage: StorageDep, request: Request
) -> Response:
    """A media segment of a rung."""
    path = storage.segment_path(video_id, quality, segment)
    # Segments are immutable whatever this says; the I-frame playlist grows until complete.
    finished = storage.complete_marker(video_id).exists()
    return serve(request, path, finished=finished, what=f"{segment} of {quality} of {video_id}")


@file_route("/stream/{video_id}/{asset_path:path}")
def asset(video_id: str, asset_path: str, storage: StorageDep, request: Request) -> Response:
    """Any other file the platform produced for this video (below its HLS folder)."""
    ids.video_id(video_id)
    if not asset_path:
        raise NotFound("name an asset: /stream/{video_id}/{asset}")
    path = storage.asset_path(video_id, asset_path)
    finished = storage.complete_marker(video_id).exists()
    return serve(request, path, finished=finished, what=f"asset {asset_path[:64]} of {video_id}")
