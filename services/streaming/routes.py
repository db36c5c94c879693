"""HLS delivery: master and rung playlists, segments, the original, other assets."""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.responses import FileResponse, Response

from services.core import ids, layout, signing
from services.core.deps import ObjectsDep, SessionDep, SettingsDep, StorageDep
from services.core.errors import Forbidden, NotFound
from services.core.fileserve import serve, serve_signed_playlist
from services.core.layout import VideoLayout
from services.core.models import Status
from services.core.objectserve import public_segments, serve_object, serve_playlist_object
from services.core.storage.interface import Store
from services.core.storage.keys import InvalidKey, check_key
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


def finished_in(store: Store, video_id: str) -> bool:
    """Whether the presentation is final (its `.complete` marker exists): playlists may then
    be cached."""
    return store.stat(VideoLayout.of(video_id).complete) is not None


def _object_playlist(
    request: Request,
    store: Store,
    key: str,
    token: str | None,
    *,
    video_id: str,
    what: str,
    public: Callable[[str], str | None] | None = None,
) -> Response:
    finished = finished_in(store, video_id)
    return serve_playlist_object(
        request, store, key, token, finished=finished, what=what, public=public
    )


def _public_segments(
    settings: SettingsDep, store: Store, token: str | None, key_of: Callable[[str], str | None]
) -> Callable[[str], str | None] | None:
    """With MEDIA_PUBLIC_URL, a public playlist's segments are fetched from there; a private
    one's (a token) never: they stay behind the service, which checks the token."""
    if token or not settings.media_public_url:
        return None
    return public_segments(store, key_of)


def _rung_media(video_id: str, quality: str) -> Callable[[str], str | None]:
    """The key of a media file a rung's playlist names (segments, init), else None."""
    lay = VideoLayout.of(video_id)

    def key_of(uri: str) -> str | None:
        if not layout.SEGMENT_RE.fullmatch(uri) or uri.endswith(".m3u8"):
            return None
        return lay.segment(quality, uri)

    return key_of


def file_route(path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """GET and HEAD (players and CDNs probe with HEAD) for a route that answers with a file."""
    return router.api_route(path, methods=["GET", "HEAD"], response_class=FileResponse)


class Qualities(BaseModel):
    video_id: str
    status: str
    qualities: list[str]


@file_route("/stream/{video_id}/master.m3u8")
def master(
    video_id: str,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """The multivariant playlist (exists from the first playable chunk on)."""
    what = f"master of {video_id}"
    if objects is not None:
        key = VideoLayout.of(video_id).master
        return _object_playlist(request, objects, key, token, video_id=video_id, what=what)
    path = storage.master_path(video_id)
    finished = storage.complete_marker(video_id).exists()
    return _playlist(request, path, token, finished=finished, what=what)


@router.get("/stream/{video_id}/qualities", response_model=Qualities)
def qualities(video_id: str, session: SessionDep, token: PlaybackToken) -> Qualities:
    """The rungs this video has."""
    video = get_video(session, video_id=video_id)
    return Qualities(video_id=video.id, status=video.status, qualities=list(video.qualities or []))


@file_route("/stream/{video_id}/original")
def original(
    video_id: str,
    session: SessionDep,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """The uploaded file as it was (byte ranges supported)."""
    video = get_video(session, video_id=video_id)
    if video.status == Status.UPLOADING:
        raise NotFound(f"video {video_id} is still uploading: its original is not complete")
    if objects is not None:
        return serve_object(
            request,
            objects,
            VideoLayout.of(video.id).source,
            finished=True,
            what=f"the original of {video_id}",
            media_type="application/octet-stream",
            filename=download_name(video.filename),
        )
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
    video_id: str,
    quality: str,
    settings: SettingsDep,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """A rung's media playlist."""
    what = f"{quality} of {video_id}"
    if objects is not None:
        key = VideoLayout.of(video_id).playlist(quality)
        public = _public_segments(settings, objects, token, _rung_media(video_id, quality))
        return _object_playlist(
            request, objects, key, token, video_id=video_id, what=what, public=public
        )
    path = storage.playlist_path(video_id, quality)
    # Until the presentation is final, an EVENT playlist grows: caches must ask again.
    finished = storage.complete_marker(video_id).exists()
    return _playlist(request, path, token, finished=finished, what=what)


@file_route("/stream/{video_id}/{quality}/{segment}")
def segment(
    video_id: str,
    quality: str,
    segment: str,
    settings: SettingsDep,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """A media segment of a rung."""
    if objects is not None:
        return _object_segment(request, settings, objects, token, video_id, quality, segment)
    path = storage.segment_path(video_id, quality, segment)
    # Segments are immutable whatever this says; the I-frame playlist grows until complete.
    finished = storage.complete_marker(video_id).exists()
    what = f"{segment} of {quality} of {video_id}"
    if path.suffix == ".m3u8":
        return _playlist(request, path, token, finished=finished, what=what)
    return serve(request, path, finished=finished, what=what)


def _object_segment(
    request: Request,
    settings: SettingsDep,
    store: Store,
    token: str | None,
    video_id: str,
    quality: str,
    segment: str,
) -> Response:
    """A rung's segment, init segment or I-frame playlist from the store."""
    key = VideoLayout.of(video_id).segment(quality, segment)
    what = f"{segment} of {quality} of {video_id}"
    if segment.endswith(".m3u8"):
        public = _public_segments(settings, store, token, _rung_media(video_id, quality))
        return _object_playlist(
            request, store, key, token, video_id=video_id, what=what, public=public
        )
    # Segments are immutable: the presentation's state does not change their caching.
    return serve_object(request, store, key, finished=True, what=what)


@file_route("/stream/{video_id}/captions/{caption_id}/{name}")
def caption_file(
    video_id: str,
    caption_id: str,
    name: str,
    settings: SettingsDep,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """A caption's WebVTT media playlist (playlist.m3u8) or one of its segments (seg_NNNNN.vtt)."""
    if objects is not None:
        return _object_caption(request, settings, objects, token, video_id, caption_id, name)
    path = storage.caption_file_path(video_id, caption_id, name)
    finished = storage.complete_marker(video_id).exists()
    what = f"{name} of caption {caption_id} of {video_id}"
    if path.suffix == ".m3u8":
        # Private playback: the segments' URIs get the token, as in every playlist.
        return _playlist(request, path, token, finished=finished, what=what)
    return serve(request, path, finished=finished, what=what)


def _object_caption(
    request: Request,
    settings: SettingsDep,
    store: Store,
    token: str | None,
    video_id: str,
    caption_id: str,
    name: str,
) -> Response:
    """A caption's playlist or WebVTT segment from the store."""
    lay = VideoLayout.of(video_id)
    key = lay.caption_file(caption_id, name)
    what = f"{name} of caption {caption_id} of {video_id}"
    if name.endswith(".m3u8"):

        def key_of(uri: str) -> str | None:
            if uri == layout.PLAYLIST or not layout.CAPTION_FILE_RE.fullmatch(uri):
                return None
            return lay.caption_file(caption_id, uri)

        public = _public_segments(settings, store, token, key_of)
        return _object_playlist(
            request, store, key, token, video_id=video_id, what=what, public=public
        )
    return serve_object(request, store, key, finished=True, what=what)


@file_route("/stream/{video_id}/{asset_path:path}")
def asset(
    video_id: str,
    asset_path: str,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """Any other file the platform produced for this video (below its HLS folder)."""
    ids.video_id(video_id)
    if not asset_path:
        raise NotFound("name an asset: /stream/{video_id}/{asset}")
    if objects is not None:
        return _object_asset(request, objects, video_id, asset_path)
    path = storage.asset_path(video_id, asset_path)
    finished = storage.complete_marker(video_id).exists()
    return serve(request, path, finished=finished, what=f"asset {asset_path[:64]} of {video_id}")


def _object_asset(request: Request, store: Store, video_id: str, asset_path: str) -> Response:
    """An object below the video's hls/ prefix named by the client: a valid key made of plain
    names (no dot name: those are the platform's own), else NotFound."""
    lay = VideoLayout.of(video_id)
    what = f"asset {asset_path[:64]} of {video_id}"
    parts = asset_path.split("/")
    if len(asset_path) > 512 or any(not p or p.startswith(".") or "\\" in p for p in parts):
        raise NotFound(f"{what} does not exist")
    try:
        key = check_key(lay.hls + asset_path)
    except InvalidKey:
        raise NotFound(f"{what} does not exist") from None
    return serve_object(request, store, key, finished=finished_in(store, video_id), what=what)
