"""HTTP face of the upload protocol (reference API: form fields, path for path)."""

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.core.bodies import streamed_body
from services.core.deps import SessionDep, SettingsDep, StorageDep
from services.core.schemas import VideoOut
from services.upload import chunk_body, digests, direct, uploads
from services.upload.direct_routes import UploadAccess, require_upload_access

router = APIRouter(tags=["upload"])
AccessChecked = [Depends(require_upload_access)]


class InitResponse(BaseModel):
    upload_id: str = Field(description="32 lowercase hex characters; the video's id from now on")
    total_chunks: int
    chunk_size: int | None


class ChunkResponse(BaseModel):
    upload_id: str
    index: int
    size: int
    sha256: str | None = Field(
        None,
        description="The chunk's sha256 (hex) when one was sent with it to be checked "
        "(`Content-Digest: sha-256=:BASE64:` on a raw body, a `sha256` field before `file` in "
        "a form) and the bytes matched it; null otherwise. A chunk whose bytes do not match "
        "is refused (400 chunk_checksum_mismatch) and not counted.",
    )
    duplicate: bool = Field(description="True when this chunk had already been received")


class UploadState(BaseModel):
    upload_id: str
    filename: str
    total_chunks: int
    total_size: int | None
    chunk_size: int | None
    received: list[int] = Field(description="Chunk indexes on disk")
    missing: list[int] = Field(description="Chunk indexes still to send")
    bytes_received: int
    completed: bool


class CompleteResponse(BaseModel):
    upload_id: str
    status: str
    video: VideoOut


@router.post("/upload/init", response_model=InitResponse)
def init(
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    access: UploadAccess,
    filename: Annotated[str, Form(description="The file's name (a label, never a path)")],
    total_chunks: Annotated[int, Form(description="How many chunks will be sent")],
    total_size: Annotated[int | None, Form(description="Whole file size in bytes")] = None,
    chunk_size: Annotated[int | None, Form(description="Size of every chunk but the last")] = None,
    sha256: Annotated[
        str | None, Form(description="Whole file's sha256, checked at complete")
    ] = None,
    codec: Annotated[
        str | None,
        Form(
            max_length=16,
            description="Ladder codec: h264 (plays everywhere) or hevc (H.265 in fMP4, "
            "fewer bits, not every browser); empty = the server's DEFAULT_CODEC",
        ),
    ] = None,
) -> InitResponse:
    """Declare an upload and get its id. With a direct upload URL (?direct_token=...), the
    URL's one upload: total_size is required, and the URL's name and codec apply."""
    name, chosen = filename, codec
    if access is not None:
        direct.check_size(access, total_size)
        name, chosen = access.name or filename, access.codec or codec
    with direct.claimed(settings, access) as upload_id:
        upload = uploads.init_upload(
            session,
            storage,
            settings,
            filename=name,
            total_chunks=total_chunks,
            total_size=total_size,
            chunk_size=chunk_size,
            sha256=sha256,
            codec=chosen,
            upload_id=upload_id,
        )
        session.flush()
    return InitResponse(
        upload_id=upload.id, total_chunks=upload.total_chunks, chunk_size=upload.chunk_size
    )


# Declared by hand: the route reads its body itself, as it arrives (see chunk_body.py).
CHUNK_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["upload_id", "index", "file"],
                "properties": {
                    "upload_id": {"type": "string", "minLength": 1, "maxLength": 64},
                    "index": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": chunk_body.MAX_INDEX,
                        "description": "0-based chunk index",
                    },
                    "sha256": {
                        "type": "string",
                        "pattern": "^[0-9a-fA-F]{64}$",
                        "description": "Optional: the chunk's sha256, checked before it counts",
                    },
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "The chunk's bytes (send it after upload_id and index)",
                    },
                },
            }
        },
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
        },
    },
}


@router.post(
    "/upload/chunk",
    response_model=ChunkResponse,
    openapi_extra={"requestBody": CHUNK_BODY},
)
@streamed_body(
    lambda settings: settings.max_chunk_bytes + chunk_body.FRAMING_BYTES,
    "MAX_CHUNK_BYTES plus the multipart framing: send smaller chunks",
)
async def chunk(
    request: Request,
    storage: StorageDep,
    settings: SettingsDep,
    access: UploadAccess,
    upload_id: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="With an octet-stream body: the upload"),
    ] = None,
    index: Annotated[
        int | None,
        Query(ge=0, le=chunk_body.MAX_INDEX, description="With an octet-stream body: the index"),
    ] = None,
    content_digest: Annotated[
        str | None,
        Header(
            alias="Content-Digest",
            max_length=digests.MAX_HEADER,
            description="With an octet-stream body, optional: `sha-256=:BASE64:` (RFC 9530), "
            "the chunk's sha256, checked before it counts",
        ),
    ] = None,
) -> ChunkResponse:
    """Store one chunk at its place; chunks may come in any order and may be resent.

    Send it as a multipart form (`upload_id`, `index`, then `file`: the reference contract),
    or as the raw bytes with `Content-Type: application/octet-stream` and `upload_id` and
    `index` in the query string. Either way the bytes go straight to their place in the file.
    """
    receipt = await chunk_body.receive(
        request,
        settings,
        storage,
        upload_id=upload_id,
        index=index,
        grant=access,
        content_digest=content_digest,
    )
    return ChunkResponse(**receipt.__dict__)


@router.get("/upload/{upload_id}", response_model=UploadState, dependencies=AccessChecked)
def state(session: SessionDep, upload_id: str) -> UploadState:
    """Which chunks have arrived and which are missing (resume after a lost connection)."""
    report = uploads.report(session, upload_id=upload_id)
    return UploadState(**{k: v for k, v in report.__dict__.items() if k != "extra"})


@router.post("/upload/complete", response_model=CompleteResponse)
def complete(
    storage: StorageDep,
    settings: SettingsDep,
    access: UploadAccess,
    upload_id: Annotated[str, Form(min_length=1, max_length=64)],
) -> CompleteResponse:
    """Assemble-check the upload, register the video and queue its transcoding."""
    if access is not None:
        direct.only(access, upload_id)
    video = uploads.complete_chunked_upload(settings, storage, upload_id=upload_id)
    return CompleteResponse(upload_id=video.id, status=video.status, video=VideoOut.of(video))


SPEEDTEST_BLOCK = os.urandom(64 * 1024)


@router.get("/api/speedtest", response_class=Response)
def speedtest(
    size: Annotated[int, Query(ge=1, le=16 * 1024 * 1024, description="Bytes to send")] = 1024
    * 1024,
) -> Response:
    """Incompressible bytes for the client to time its link (it picks a chunk size from it)."""
    whole, rest = divmod(size, len(SPEEDTEST_BLOCK))
    body = SPEEDTEST_BLOCK * whole + SPEEDTEST_BLOCK[:rest]
    return Response(
        body, media_type="application/octet-stream", headers={"Cache-Control": "no-store"}
    )
