"""HTTP face of direct upload URLs (`direct.py`): creating one, asking where it stands, the
access rule of every upload route, and the CORS answers of a direct upload URL."""

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.app import TUS_REQUEST_HEADERS, TUS_RESPONSE_HEADERS
from services.core.auth import TOKEN_CHECKS, WAITS, Presented, check_once
from services.core.cors import (
    DIRECT_TOKEN,
    has_direct_token,
    is_preflight,
    settings_of,
    with_headers,
)
from services.core.deps import SettingsDep
from services.core.errors import Forbidden, error_body
from services.upload import direct

router = APIRouter(tags=["direct uploads"])
# What a Host / X-Forwarded-Host may look like before it goes into a URL the client is given.
HOST_RE = re.compile(r"([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
DIRECT_METHODS = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"
DIRECT_EXPOSED = ", ".join(
    ["Content-Length", "Content-Range", "Accept-Ranges", "ETag", *TUS_RESPONSE_HEADERS]
)
DIRECT_ALLOWED = ", ".join(["Content-Type", *TUS_REQUEST_HEADERS])


def public_base(request: Request) -> str:
    """`scheme://host` as the client sees this server (through the gateway or not), or ''
    when the Host is unusable (the client then resolves a relative URL itself)."""
    # The gateway names the host the client spoke to in X-Forwarded-Host (uvicorn applies
    # X-Forwarded-Proto from it already); a bad value only changes this client's own answer.
    forwarded = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    host = forwarded or request.headers.get("host", "")
    scheme = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    if HOST_RE.fullmatch(host) and scheme in ("http", "https"):
        return f"{scheme}://{host}"
    return ""


# --- who may do what ---------------------------------------------------------------------------


async def require_upload_access(request: Request, settings: SettingsDep) -> direct.Grant | None:
    """FastAPI dependency of every upload route: the direct upload grant the request holds
    (its rules apply), or None for a request under the usual rule (UPLOAD_TOKEN when set).

    A coroutine: FastAPI runs a plain function dependency in a worker thread, a hop for every
    chunk. Without a direct token the check is a constant-time comparison, made on the event
    loop; a direct token is a database lookup, made in a worker thread (WAITS), and once a
    request: the body guard takes this finding, or this the guard's (check_once)."""
    return await check_once(request.scope, direct.check_access, settings)


async def require_direct_creator(request: Request, settings: SettingsDep) -> None:
    """FastAPI dependency: the admin token, or the upload token when UPLOAD_TOKEN is set."""
    await check_once(request.scope, direct.check_creator, settings)


def _holds_direct_token(presented: Presented) -> bool:
    return presented.query.get(DIRECT_TOKEN) is not None


# Made before the first body byte too (services.core.bodies).
TOKEN_CHECKS[require_upload_access] = direct.check_access
TOKEN_CHECKS[require_direct_creator] = direct.check_creator
WAITS[direct.check_access] = _holds_direct_token

UploadAccess = Annotated[direct.Grant | None, Depends(require_upload_access)]


def with_token(url: str, grant: direct.Grant | None) -> str:
    """`url` carrying the grant's token, so the client needs nothing else to go on."""
    return url if grant is None else f"{url}?{DIRECT_TOKEN}={grant.token}"


# --- routes ---------------------------------------------------------------------------------


class DirectUploadIn(BaseModel):
    """A direct upload's limits and its video's settings."""

    max_size: int | None = Field(
        None, description="Most bytes the file may have; default MAX_UPLOAD_BYTES"
    )
    expires_in: int = Field(
        direct.DEFAULT_SECONDS,
        description="Seconds the URL works (60 up to DIRECT_UPLOAD_MAX_SECONDS)",
    )
    cors_origin: str | None = Field(
        None,
        max_length=255,
        description="The one browser origin that may send it (https://app.example.com); "
        "none: scripts and servers only",
    )
    name: str | None = Field(
        None, max_length=255, description="The video's name; default the file's name"
    )
    private: bool | None = Field(
        None,
        description="Whether playback needs a signed token: that is the server's choice "
        "(PLAYBACK_SIGNING_KEY) for every video; asking for the other is a 409",
    )
    codec: str | None = Field(None, max_length=16, description="h264 or hevc; default the server's")


class ChunkedUse(BaseModel):
    """How to send the file with the chunked API instead of tus."""

    init_url: str = Field(description="POST the /upload/init form here (total_size required)")
    chunk_url: str = Field(description="POST each chunk here (upload_id from init)")
    complete_url: str = Field(description="POST upload_id here once every chunk is sent")


class DirectUploadOut(BaseModel):
    """A direct upload: its URLs (the token is in them) and where it stands."""

    id: str
    status: str = Field(description="waiting | uploading | completed | cancelled | expired")
    video_id: str | None = Field(None, description="Once completed: the video it became")
    tus_url: str | None = Field(None, description="The tus endpoint (Uppy, tus-js-client)")
    chunked: ChunkedUse | None = None
    token: str | None = Field(None, description="The token alone (shown at creation only)")
    max_size: int
    expires_at: datetime
    cors_origin: str | None
    name: str | None
    private: bool | None
    codec: str | None


def _out(state: direct.State, token: str | None, base: str) -> DirectUploadOut:
    row = state.row
    urls: dict[str, object] = {}
    if token is not None:
        query = f"?{DIRECT_TOKEN}={token}"
        urls = {
            "tus_url": f"{base}/files/{query}",
            "chunked": ChunkedUse(
                init_url=f"{base}/upload/init{query}",
                chunk_url=f"{base}/upload/chunk{query}",
                complete_url=f"{base}/upload/complete{query}",
            ),
            "token": token,
        }
    return DirectUploadOut(
        id=row.id,
        status=state.status,
        video_id=state.video_id,
        max_size=row.max_size,
        expires_at=row.expires_at,
        cors_origin=row.cors_origin,
        name=row.name,
        private=row.private,
        codec=row.codec,
        **urls,
    )


@router.post(
    "/upload/direct",
    status_code=201,
    response_model=DirectUploadOut,
    dependencies=[Depends(require_direct_creator)],
)
def create_direct_upload(
    body: DirectUploadIn, request: Request, settings: SettingsDep
) -> DirectUploadOut:
    """A one-time upload URL for a browser or a script that holds no token (admin token, or
    the upload token when UPLOAD_TOKEN is set). The token is shown here only."""
    row, token = direct.create(settings, direct.Spec(**body.model_dump()))
    return _out(direct.State(row, "waiting", None), token, public_base(request))


@router.get(
    "/upload/direct/{direct_id}",
    response_model=DirectUploadOut,
    dependencies=[Depends(require_direct_creator)],
)
def direct_upload_state(direct_id: str, request: Request, settings: SettingsDep) -> DirectUploadOut:
    """Where a direct upload stands: waiting, uploading, completed (with its video), ..."""
    return _out(direct.state(settings, direct_id), None, public_base(request))


# --- CORS of a direct upload URL -----------------------------------------------------------


class DirectUploadCors:
    """ASGI middleware: a direct upload URL answers the origin it was made for, and only it.

    A preflight from that origin is allowed (tus methods and headers); from any other, or for
    an unknown token, refused with the reason (a browser then shows a CORS failure). Every
    answer to that origin carries its CORS headers, refusals included, so the page can read
    why (410 after completion or expiry, 413 over max_size). Other requests pass untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_direct_token(scope):
            await self.app(scope, receive, send)
            return
        request = Headers(scope=scope)
        origin = request.get("origin")
        token = QueryParams(scope.get("query_string", b"")).get(DIRECT_TOKEN, "")
        allowed = origin is not None and (
            direct.cors_origin_of(settings_of(scope), token) == origin.lower()
        )
        if is_preflight(scope):
            await self._preflight(request, origin, allowed, scope, receive, send)
            return
        if not allowed:
            await self.app(scope, receive, send)  # the route refuses a foreign Origin itself
            return
        assert origin is not None
        extra = _cors(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_headers(list(message.get("headers", [])), extra)
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self,
        request: Headers,
        origin: str | None,
        allowed: bool,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if not allowed:
            refusal = Forbidden(
                f"this direct upload URL does not accept requests from {str(origin)[:100]} "
                "(or it is not known): it answers the cors_origin it was made for only",
                code="origin_not_allowed",
            )
            answer = JSONResponse(error_body(refusal.code, refusal.detail), refusal.status)
            await answer(scope, receive, send)
            return
        assert origin is not None
        headers = [
            *_cors(origin),
            (b"access-control-allow-methods", DIRECT_METHODS.encode()),
            (b"access-control-allow-headers", _asked(request).encode("latin-1")),
            (b"access-control-max-age", b"600"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _cors(origin: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", DIRECT_EXPOSED.encode()),
        (b"vary", b"Origin"),
    ]


def _asked(request: Headers) -> str:
    """The headers a preflight asks for, when all are tus's or plain ones; else tus's list."""
    asked = request.get("access-control-request-headers", "")
    known = {h.lower() for h in (*TUS_REQUEST_HEADERS, "Content-Type", "Accept")}
    names = [h.strip() for h in asked.split(",") if h.strip()]
    return asked if names and all(n.lower() in known for n in names) else DIRECT_ALLOWED
