"""The player's pictures and the downloads: poster, storyboard, the original, a rung as MP4.

A file that exists is served like every other (`files.serve`: type, ETag/304, ranges); one
that is missing but can be made from what the encode produced is made first, once, however
many requests ask at the same time (`services.media.derived`).
"""

import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.from_thread
from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import FileResponse, Response

from services.core import ids, layout
from services.core.deps import ObjectsDep, SessionDep, SettingsDep, StorageDep
from services.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from services.core.fileserve import MEDIA_TYPES, serve
from services.core.layout import VideoLayout
from services.core.models import Job, Status, Video
from services.core.objectserve import PLAYLIST_LIMIT, serve_object
from services.core.settings import Settings
from services.core.storage import Storage
from services.core.storage.interface import ObjectMissing, Store
from services.core.videos import get_video
from services.media import derived
from services.media.plan import Plan
from services.media.thumbnails import add_token_to_vtt
from services.streaming.routes import PlaybackToken, download_name, original

log = logging.getLogger(__name__)
router = APIRouter(tags=["media"])

# Derived files are made anew when a video is encoded again (same URL, new bytes): caches
# keep them an hour, then revalidate with the ETag.
DERIVED_CACHE = "max-age=3600"
# A poster or a storyboard sprite: a few hundred KB at most.
PICTURE_BYTES = 1024 * 1024
DOWNLOAD_NAME = re.compile(rf"(?P<quality>{ids.QUALITY_RE.pattern})\.(mp4|m4a)")


def _file_route(path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """GET and HEAD for a route that answers with a file."""
    return router.api_route(path, methods=["GET", "HEAD"], response_class=FileResponse)


@dataclass(frozen=True)
class Facts:
    """What the routes need to know about a video before making one of its files."""

    video: Video
    plan: Plan | None


def _facts(session: Session, video_id: str) -> Facts:
    """The video and its plan; the read transaction ends here (making a file takes a while)."""
    video = get_video(session, video_id=video_id)
    job = session.get(Job, video.id)
    plan = Plan.from_dict(job.plan) if job is not None and job.plan else None
    session.commit()
    return Facts(video, plan)


def _refuse_audio_only(facts: Facts, what: str) -> None:
    """A clear 404 for a picture of a video that has none (an audio-only upload)."""
    if facts.plan is not None and facts.plan.audio_only:
        raise NotFound(f"an audio-only video has no {what}: video {facts.video.id} is sound only")


def _make(
    what: str,
    settings: Settings,
    needed: int,
    make: Callable[..., Coroutine[Any, Any, object]],
    *args: Any,
) -> None:
    """Run an async maker from this request's worker thread on the service's event loop,
    once there is room for `needed` bytes above MIN_FREE_BYTES (any request can ask)."""
    Storage(settings.storage_dir).check_free_space(needed, settings.min_free_bytes, what)
    try:
        anyio.from_thread.run(make, *args)
    except derived.Busy as exc:
        raise Conflict(f"{what} is still being made: try again in a moment ({exc})") from exc
    except derived.NotMade as exc:
        # ffmpeg's words name server paths: they stay in the log.
        log.warning("%s could not be made: %s", what, exc)
        raise Unavailable(f"{what} could not be made: try again later", code="not_made") from exc


def _bytes_under(*folders: Path) -> int:
    """What the files in `folders` add up to (a remux writes about as much as it reads)."""
    return sum(f.stat().st_size for folder in folders if folder.is_dir() for f in folder.iterdir())


def _cached(response: Response, token: str | None) -> Response:
    # A token opens one private video: no shared cache may keep what it opened.
    response.headers["Cache-Control"] = f"{'private' if token else 'public'}, {DERIVED_CACHE}"
    return response


# --- poster and storyboard ------------------------------------------------------------------


@_file_route("/stream/{video_id}/poster.jpg")
def poster(
    video_id: str,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """A JPEG frame from about a tenth into the video, there once its first part plays."""
    if objects is not None:
        lay = VideoLayout.of(video_id)
        key = lay.poster
        picture = (key, lay.master)
        when = "its first part is transcoded"
        _require_object(session, settings, objects, video_id, picture, when)
        what = f"the poster of {video_id}"
        return _cached(serve_object(request, objects, key, finished=True, what=what), token)
    path = storage.poster_path(video_id)
    if not path.is_file():
        facts = _facts(session, video_id)
        _refuse_audio_only(facts, "poster")
        if facts.plan is None or not storage.master_path(video_id).is_file():
            raise NotFound(
                f"video {video_id} has no poster yet: it is made once its first part is "
                f"transcoded (status: {facts.video.status})"
            )
        what = f"the poster of {video_id}"
        _make(what, settings, PICTURE_BYTES, derived.make_poster, settings, video_id, facts.plan)
    return _cached(serve(request, path, finished=True, what=f"the poster of {video_id}"), token)


def _require_object(
    session: Session,
    settings: Settings,
    store: Store,
    video_id: str,
    picture: tuple[str, str],
    when: str,
) -> None:
    """Make a picture (poster or storyboard) whose object is missing when what it waits for
    is stored (a worker died in between, or the video predates it): in scratch, then put in
    the store. Else NotFound saying when it comes. `picture`: the picture's key and the key
    of the object it waits for (the master, the completion marker)."""
    key, ready = picture
    if store.stat(key) is not None:
        return
    name = "poster" if key == VideoLayout.of(video_id).poster else "storyboard"
    facts = _facts(session, video_id)
    _refuse_audio_only(facts, name)
    if facts.plan is None or store.stat(ready) is None:
        raise NotFound(
            f"video {facts.video.id} has no {name} yet: it is made once {when} "
            f"(status: {facts.video.status})"
        )
    make = derived.make_stored_poster if name == "poster" else derived.make_stored_storyboard
    what = f"the {name} of {facts.video.id}"
    _make(what, settings, PICTURE_BYTES, make, settings, facts.video.id, facts.plan)


def _ensure_storyboard(
    session: Session, settings: SettingsDep, storage: Storage, video_id: str
) -> None:
    """Make the storyboard if it is missing and the video is finished, else say when it is."""
    if storage.storyboard_vtt_path(video_id).is_file():
        return
    facts = _facts(session, video_id)
    _refuse_audio_only(facts, "storyboard")
    if facts.plan is None or not storage.complete_marker(video_id).is_file():
        raise NotFound(
            f"video {video_id} has no storyboard yet: it is made once transcoding is "
            f"finished (status: {facts.video.status})"
        )
    what = f"the storyboard of {video_id}"
    plan = facts.plan
    _make(what, settings, PICTURE_BYTES, derived.make_storyboard, settings, video_id, plan)


@_file_route("/stream/{video_id}/storyboard.vtt")
def storyboard_map(
    video_id: str,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """WebVTT cues from time ranges to tiles of the sprite (`storyboard.jpg#xywh=x,y,w,h`)."""
    if objects is not None:
        return _object_storyboard_map(request, session, settings, objects, video_id, token)
    _ensure_storyboard(session, settings, storage, video_id)
    path = storage.storyboard_vtt_path(video_id)
    if token:
        # The tiles' URIs are relative to the map: they need the token as much as the map.
        try:
            text = add_token_to_vtt(path.read_text(encoding="utf-8"), token)
        except FileNotFoundError:
            raise NotFound(f"the storyboard of {video_id} does not exist") from None
        return Response(
            text, media_type=MEDIA_TYPES[".vtt"], headers={"Cache-Control": "private, no-cache"}
        )
    return _cached(serve(request, path, finished=True, what=f"the storyboard of {video_id}"), token)


def _object_storyboard_map(
    request: Request,
    session: Session,
    settings: Settings,
    store: Store,
    video_id: str,
    token: str | None,
) -> Response:
    lay = VideoLayout.of(video_id)
    key = lay.storyboard_vtt
    picture = (key, lay.complete)
    _require_object(session, settings, store, video_id, picture, "transcoding is finished")
    what = f"the storyboard of {video_id}"
    if token:
        try:
            text = store.get_bytes(key, limit=PLAYLIST_LIMIT).decode("utf-8")
        except ObjectMissing:
            raise NotFound(f"{what} does not exist") from None
        return Response(
            add_token_to_vtt(text, token),
            media_type=MEDIA_TYPES[".vtt"],
            headers={"Cache-Control": "private, no-cache"},
        )
    return _cached(serve_object(request, store, key, finished=True, what=what), token)


@_file_route("/stream/{video_id}/storyboard.jpg")
def storyboard_image(
    video_id: str,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """The storyboard sprite: one small frame every few seconds, in a grid."""
    what = f"the storyboard of {video_id}"
    if objects is not None:
        lay = VideoLayout.of(video_id)
        key = lay.storyboard_image
        # The map is put after the sprite: asking for the map makes both.
        picture = (lay.storyboard_vtt, lay.complete)
        _require_object(session, settings, objects, video_id, picture, "transcoding is finished")
        return _cached(serve_object(request, objects, key, finished=True, what=what), token)
    _ensure_storyboard(session, settings, storage, video_id)
    path = storage.storyboard_image_path(video_id)
    return _cached(serve(request, path, finished=True, what=what), token)


# --- downloads ------------------------------------------------------------------------------


@_file_route("/stream/{video_id}/download")
def download_original(
    video_id: str,
    session: SessionDep,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """The uploaded file as it was, as an attachment under its name (byte ranges supported)."""
    return original(video_id, session, storage, objects, request, token)


def _rung_of(name: str) -> str:
    """The rung a download name asks for: `720p.mp4`, or `audio.m4a` (audio-only videos)."""
    found = DOWNLOAD_NAME.fullmatch(name)
    if found is None:
        raise InvalidInput(
            f"'{name[:64]}' is not a download name: expected a rung and .mp4, such as "
            "720p.mp4, or audio.m4a for an audio-only video"
        )
    return found.group("quality")


@_file_route("/stream/{video_id}/download/{name}")
def download_rung(
    video_id: str,
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    objects: ObjectsDep,
    request: Request,
    token: PlaybackToken,
) -> Response:
    """Rung `name` (e.g. 720p.mp4) as one MP4 with the audio, or an audio-only video's audio
    (audio.m4a): remuxed at the first request, then kept (byte ranges supported)."""
    rung = _rung_of(name)
    facts = _facts(session, ids.video_id(video_id))
    video = facts.video
    # The plan is what a remux needs; from a bucket the download is only read.
    if video.status != Status.OK or (facts.plan is None and objects is None):
        raise Conflict(
            f"video {video_id} is {video.status}: a rung can be downloaded once transcoding is "
            f"finished (status ok); the original is at /stream/{video_id}/download"
        )
    rungs = list(video.qualities or [])
    if rung not in rungs:
        raise NotFound(f"video {video_id} has no rung {rung}: it has {', '.join(rungs) or 'none'}")
    path = storage.download_path(video.id, rung)
    if path.name != name:  # audio.mp4, 720p.m4a: the rung exists under its own name
        raise NotFound(f"video {video_id} has no {name}: its {rung} downloads as {path.name}")
    what = f"the {path.name} download of {video_id}"
    if objects is not None:
        _make_stored_download(settings, objects, facts, rung, what)
        return _object_download(request, objects, video, rung, what, token)
    if not path.is_file():
        # A set: an audio-only video's one folder (its rung is the audio) counts once.
        needed = _bytes_under(*{storage.rung_dir(video.id, r) for r in (rung, layout.AUDIO)})
        _make(what, settings, needed, derived.make_rung_mp4, settings, video.id, facts.plan, rung)
    response = serve(
        request,
        path,
        finished=True,
        what=what,
        media_type=MEDIA_TYPES[path.suffix],
        filename=download_name(video.filename, f"-{path.name}"),
    )
    return _cached(response, token)


def _make_stored_download(
    settings: Settings, store: Store, facts: Facts, rung: str, what: str
) -> None:
    """Remux the rung's download in scratch and put it in the store, unless it is there."""
    lay = VideoLayout.of(facts.video.id)
    if store.stat(lay.download(rung)) is not None:
        return
    if facts.plan is None:
        raise NotFound(f"{what} cannot be made: the video's encoding plan is gone")
    # Scratch holds the segments read and the MP4 written: about twice the rung and audio.
    rungs = {lay.rung(r) for r in (rung, layout.AUDIO)}
    needed = 2 * sum(info.size for prefix in rungs for info in store.list_prefix(prefix))
    make = derived.make_stored_rung_mp4
    _make(what, settings, needed, make, settings, facts.video.id, facts.plan, rung)


def _object_download(
    request: Request, store: Store, video: Video, rung: str, what: str, token: str | None
) -> Response:
    """A rung's download from the store (made by `_make_stored_download`)."""
    key = VideoLayout.of(video.id).download(rung)
    name = layout.download_name(rung)
    response = serve_object(
        request,
        store,
        key,
        finished=True,
        what=what,
        media_type=MEDIA_TYPES[name[name.rindex(".") :]],
        filename=download_name(video.filename, f"-{name}"),
    )
    return _cached(response, token)
