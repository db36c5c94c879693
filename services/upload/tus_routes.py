"""HTTP face of tus 1.0 at /files/: headers in, headers out; the protocol is in `tus.py`.

Every answer carries `Tus-Resumable`; errors keep the platform's JSON shape
(`{"error", "detail"}`) with tus's statuses. Bodies are streamed to the protocol's writer in
blocks, off the event loop; a client that goes away mid-body keeps what arrived.
"""

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from services.core.bodies import streamed_body
from services.core.deps import SettingsDep, StorageDep
from services.core.errors import AppError, ErrorBody, InvalidInput, error_body
from services.core.tasks import while_busy
from services.upload import direct, tus
from services.upload.direct_routes import (
    UploadAccess,
    public_base,
    require_upload_access,
    with_token,
)

BLOCK = 1024 * 1024
# A PATCH that meets the lock tries again after this, doubling up to the most.
LOCK_POLL_FIRST, LOCK_POLL_MOST = 0.02, 0.25
# A body's bytes are the upload's: no more than the largest upload. Each PATCH is checked
# against what is left of its upload by the protocol (tus.start_patch, PatchWriter).
UPLOAD_BODY = streamed_body(
    lambda settings: settings.max_upload_bytes,
    "MAX_UPLOAD_BYTES, the largest upload (Tus-Max-Size)",
)


class TusRoute(APIRoute):
    """Adds Tus-Resumable to every answer and writes the catalogue's errors with it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, wrapped."""
        handler = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except AppError as exc:
                return error_response(exc)
            response.headers["Tus-Resumable"] = tus.TUS_VERSION
            return response

        return tus_handler


def error_response(exc: AppError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one way a tus error is written: JSON body, tus headers, `headers` on top."""
    extra = {"Tus-Resumable": tus.TUS_VERSION, "Cache-Control": "no-store", **(headers or {})}
    if exc.status == 412:
        extra["Tus-Version"] = tus.TUS_VERSION
    if exc.status == 401:
        extra["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(exc.code, exc.detail), exc.status, headers=extra)


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (403, "PATCH against a final (concatenated) upload"),
        (409, "Upload-Offset is not the upload's offset (HEAD it and resume from there)"),
        (410, "The upload expired and is being removed: start a new one"),
        (412, "Tus-Resumable is missing or not 1.0.0"),
        (415, "The body is not application/offset+octet-stream"),
        (422, "The finished upload is not a video (the reason is in the detail)"),
        (423, "Another request is writing to this upload: retry"),
        (460, "The body does not match Upload-Checksum: its bytes were discarded"),
    )
}
EXPIRES = _header("When the unfinished upload expires (RFC 9110 date)")
OFFSET = _header("Bytes stored so far")

ACCESS_CHECKED = [Depends(require_upload_access)]
router = APIRouter(prefix="/files", tags=["tus"], route_class=TusRoute, responses=ERRORS)

TusResumable = Annotated[
    str | None, Header(alias="Tus-Resumable", description="The protocol version: 1.0.0")
]
UploadLength = Annotated[
    str | None, Header(alias="Upload-Length", description="The whole file's size in bytes")
]
UploadDeferLength = Annotated[
    str | None,
    Header(alias="Upload-Defer-Length", description="1: the length follows in a PATCH"),
]
UploadMetadata = Annotated[
    str | None,
    Header(
        alias="Upload-Metadata",
        description="Comma-separated 'key base64value' pairs; 'filename' names the video",
    ),
]
UploadConcat = Annotated[
    str | None,
    Header(alias="Upload-Concat", description="'partial', or 'final;<part URL> <part URL> ...'"),
]
UploadChecksum = Annotated[
    str | None,
    Header(alias="Upload-Checksum", description="'<sha1|md5|sha256> <base64 digest of the body>'"),
]
UploadOffset = Annotated[
    str | None, Header(alias="Upload-Offset", description="Where this body starts")
]


def http_date(moment: datetime) -> str:
    """An RFC 9110 date (`Wed, 25 Jun 2014 16:00:00 GMT`)."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def upload_url(request: Request, upload_id: str) -> str:
    """The upload's absolute URL as the client sees it (through the gateway or not); relative
    when the Host is unusable (tus clients resolve it against the URL they posted to)."""
    return f"{public_base(request)}/files/{upload_id}"


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _has_body(request: Request) -> bool:
    return bool(_content_length(request)) or "transfer-encoding" in request.headers


async def _pump(request: Request, writer: tus.PatchWriter) -> bool:
    """Feed the body to `writer` in blocks; False when the client went away mid-body."""
    pieces: list[bytes] = []
    size = 0
    whole = True
    try:
        async for piece in request.stream():
            pieces.append(piece)
            size += len(piece)
            if size >= BLOCK:
                # One copy at most (a join of one piece is the piece itself).
                await run_in_threadpool(writer.write, b"".join(pieces))
                pieces.clear()
                size = 0
    except ClientDisconnect:
        whole = False
    if pieces:
        await run_in_threadpool(writer.write, b"".join(pieces))
    return whole


async def _receive(request: Request, writer: tus.PatchWriter) -> tus.PatchResult:
    """Write the body, make it count, let the next writer in."""
    try:
        whole = await _pump(request, writer)
        return await run_in_threadpool(writer.commit, whole_body=whole)
    finally:
        writer.release()


async def _write_body(
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    *,
    upload_id: str,
    offset: str | None,
    length: str | None,
    checksum: str | None,
) -> tus.PatchResult:
    start = partial(
        tus.start_patch,
        settings,
        storage,
        upload_id=upload_id,
        offset=offset,
        length=length,
        checksum=checksum,
        content_type=request.headers.get("content-type"),
        content_length=_content_length(request),
    )
    # A client that lost its connection retries at once, while the server may still be making
    # the cut PATCH's bytes count (fdatasync, the offset, a part to object storage). Like tusd's
    # lock timeout, wait a bounded while for that writer, on the event loop, not in a thread.
    writer = await while_busy(
        start,
        tus.UploadLocked,
        wait=settings.tus_lock_wait_seconds,
        pause=LOCK_POLL_FIRST,
        most=LOCK_POLL_MOST,
    )
    return await _receive(request, writer)


def _progress_headers(result: tus.PatchResult) -> dict[str, str]:
    headers = {"Upload-Offset": str(result.offset)}
    if result.expires is not None:
        headers["Upload-Expires"] = http_date(result.expires)
    return headers


# --- OPTIONS ---------------------------------------------------------------------------------


def _discover(settings: SettingsDep) -> Response:
    """The server's tus version, extensions, size limit and checksum algorithms."""
    return Response(status_code=204, headers=tus.discovery(settings))


DISCOVERY: Responses = {
    204: {
        "description": "What this server supports",
        "headers": {
            name: _header(name)
            for name in ("Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm")
        },
    }
}
for _path in ("", "/", "/{upload_id}"):
    router.add_api_route(
        _path,
        _discover,
        methods=["OPTIONS"],
        status_code=204,
        response_class=Response,
        responses=DISCOVERY,
        include_in_schema=_path == "/",
        name=f"tus_options{_path.replace('/', '_').replace('{', '').replace('}', '')}",
    )


# --- POST (creation, creation-with-upload, concatenation) ------------------------------------


@UPLOAD_BODY
async def create(
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    access: UploadAccess,
    tus_resumable: TusResumable = None,
    upload_length: UploadLength = None,
    upload_defer_length: UploadDeferLength = None,
    upload_metadata: UploadMetadata = None,
    upload_concat: UploadConcat = None,
    upload_checksum: UploadChecksum = None,
) -> Response:
    """Create an upload; its URL is in Location. A body (application/offset+octet-stream)
    is its first bytes; `Upload-Concat: final;...` assembles finished partial uploads."""
    tus.check_version(tus_resumable)
    body = _has_body(request) and not (upload_concat or "").startswith("final")
    if body:
        tus.check_offset_stream(request.headers.get("content-type"))
        tus.parse_checksum(upload_checksum)  # refused before anything is created
    creation = {
        "length": upload_length,
        "defer_length": upload_defer_length,
        "metadata": upload_metadata,
        "concat": upload_concat,
    }
    if access is None:
        info = await run_in_threadpool(partial(tus.create, settings, storage, **creation))
    else:
        info = await run_in_threadpool(
            partial(_create_direct, settings, storage, access, **creation)
        )
    headers = {"Location": with_token(upload_url(request, info.id), access)}
    if info.expires is not None:
        headers["Upload-Expires"] = http_date(info.expires)
    if body:
        try:
            result = await _write_body(
                request,
                settings,
                storage,
                upload_id=info.id,
                offset="0",
                length=None,
                checksum=upload_checksum,
            )
        except AppError as exc:
            # The upload exists: say where, so the client can resume it.
            return error_response(exc, headers | {"Upload-Offset": "0"})
        headers |= _progress_headers(result)
    return Response(status_code=201, headers=headers)


def _create_direct(
    settings: SettingsDep,
    storage: StorageDep,
    grant: direct.Grant,
    *,
    length: str | None,
    defer_length: str | None,
    metadata: str | None,
    concat: str | None,
) -> tus.UploadInfo:
    """The one upload of a direct upload URL: a plain upload of a declared size within the
    URL's limit, named and encoded as the URL says."""
    if concat is not None:
        raise InvalidInput("a direct upload URL takes one plain upload: no Upload-Concat")
    declared = tus.parse_size("Upload-Length", length) if length is not None else None
    direct.check_size(grant, declared)
    with direct.claimed(settings, grant) as upload_id:
        assert upload_id is not None
        return tus.create(
            settings,
            storage,
            length=length,
            defer_length=defer_length,
            metadata=metadata,
            concat=None,
            name=grant.name,
            codec=grant.codec,
            upload_id=upload_id,
        )


CREATED: Responses = {
    201: {
        "description": "Created; Location is the upload's URL",
        "headers": {"Location": _header("The upload's URL"), "Upload-Offset": OFFSET},
    }
}
for _path in ("", "/"):
    router.add_api_route(
        _path,
        create,
        methods=["POST"],
        status_code=201,
        response_class=Response,
        responses=CREATED,
        include_in_schema=_path == "/",
        name=f"tus_create{_path.replace('/', '_')}",
    )


# --- HEAD, PATCH, DELETE on one upload -------------------------------------------------------


@router.head(
    "/{upload_id}",
    response_class=Response,
    dependencies=ACCESS_CHECKED,
    responses={
        200: {
            "description": "The upload's offset and declaration",
            "headers": {"Upload-Offset": OFFSET, "Upload-Length": _header("The whole size")},
        }
    },
)
def head(
    settings: SettingsDep, storage: StorageDep, upload_id: str, tus_resumable: TusResumable = None
) -> Response:
    """Where to resume: Upload-Offset, with Upload-Length, Upload-Metadata, Upload-Expires."""
    tus.check_version(tus_resumable)
    info = tus.describe(settings, storage, upload_id=upload_id)
    headers = {"Cache-Control": "no-store"}
    # A final upload has an offset only once assembled (it always is once created here).
    if not info.final or info.offset == info.length:
        headers["Upload-Offset"] = str(info.offset)
    if info.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(info.length)
    if info.metadata:
        headers["Upload-Metadata"] = info.metadata
    if info.concat:
        headers["Upload-Concat"] = info.concat
    if info.expires is not None:
        headers["Upload-Expires"] = http_date(info.expires)
    return Response(status_code=200, headers=headers)


PATCHED: Responses = {
    204: {"description": "Stored", "headers": {"Upload-Offset": OFFSET, "Upload-Expires": EXPIRES}}
}


@router.patch(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    dependencies=ACCESS_CHECKED,
    responses=PATCHED,
)
@UPLOAD_BODY
async def patch(
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    upload_id: str,
    tus_resumable: TusResumable = None,
    upload_offset: UploadOffset = None,
    upload_length: UploadLength = None,
    upload_checksum: UploadChecksum = None,
) -> Response:
    """Append the body (application/offset+octet-stream) at Upload-Offset. The last byte
    completes the upload: it is probed and queued for transcoding like a chunked one."""
    tus.check_version(tus_resumable)
    result = await _write_body(
        request,
        settings,
        storage,
        upload_id=upload_id,
        offset=upload_offset,
        length=upload_length,
        checksum=upload_checksum,
    )
    return Response(status_code=204, headers=_progress_headers(result))


@router.delete(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    dependencies=ACCESS_CHECKED,
)
def terminate(
    settings: SettingsDep, storage: StorageDep, upload_id: str, tus_resumable: TusResumable = None
) -> Response:
    """Abandon an unfinished upload: its bytes are removed (a finished one is a video)."""
    tus.check_version(tus_resumable)
    tus.terminate(settings, storage, upload_id=upload_id)
    return Response(status_code=204)


@router.post("/{upload_id}", dependencies=ACCESS_CHECKED, include_in_schema=False)
@UPLOAD_BODY
async def method_override(
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    upload_id: str,
    tus_resumable: TusResumable = None,
    upload_offset: UploadOffset = None,
    upload_length: UploadLength = None,
    upload_checksum: UploadChecksum = None,
) -> Response:
    """X-HTTP-Method-Override: PATCH or DELETE, for clients that can only send POST."""
    method = request.headers.get("x-http-method-override", "").strip().upper()
    if method == "PATCH":
        return await patch(
            request,
            settings,
            storage,
            upload_id,
            tus_resumable,
            upload_offset,
            upload_length,
            upload_checksum,
        )
    if method == "DELETE":
        return await run_in_threadpool(terminate, settings, storage, upload_id, tus_resumable)
    raise InvalidInput(
        "POST on an upload URL needs X-HTTP-Method-Override: PATCH or DELETE "
        "(create uploads with POST /files/)"
    )
