"""The error catalogue. Every failure a client can see is one of these:

    AppError (code, status 500)
    ├── InvalidInput      400  the request is malformed; the message says what to fix
    ├── Unauthorized      401  a token is needed (or the one given is wrong)
    ├── Forbidden         403  a playback token is missing, wrong or expired
    ├── NotFound          404  no such video, upload, rung or file
    ├── Conflict          409  the request clashes with the current state (missing chunks, ...)
    ├── TooLarge          413  a chunk or upload over the configured limits
    ├── NotAVideo         422  the content does not probe as video
    ├── InsufficientStorage 507  accepting it would leave too little free disk space
    ├── NotImplementedHere 501  a format this server does not produce (oEmbed's format=xml)
    ├── Unavailable       503  it cannot be done right now (a file could not be made): retry
    └── UpstreamError     502  a service behind the gateway did not answer
        └── UpstreamTimeout 504

`install_error_handlers` turns them, and FastAPI's validation errors, into
`{"error": code, "detail": message}`; anything else is logged and becomes a 500 `internal`.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.core.redact import public_text

log = logging.getLogger(__name__)


class AppError(Exception):
    """Base of the catalogue: a machine-readable `code`, an HTTP `status`, a human message."""

    code = "internal"
    status = 500

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code


class InvalidInput(AppError):
    code, status = "invalid_input", 400


class Unauthorized(AppError):
    code, status = "unauthorized", 401


class Forbidden(AppError):
    code, status = "forbidden", 403


class NotFound(AppError):
    code, status = "not_found", 404


class Conflict(AppError):
    code, status = "conflict", 409


class TooLarge(AppError):
    code, status = "too_large", 413


class NotAVideo(AppError):
    code, status = "not_a_video", 422


class InsufficientStorage(AppError):
    code, status = "insufficient_storage", 507


class NotImplementedHere(AppError):
    code, status = "not_implemented", 501


class Unavailable(AppError):
    code, status = "unavailable", 503


class UpstreamError(AppError):
    code, status = "upstream_unavailable", 502


class UpstreamTimeout(UpstreamError):
    code, status = "upstream_timeout", 504


class ErrorBody(BaseModel):
    """Every error response: a machine-readable code and a message saying what to fix."""

    error: str
    detail: str


# Declared on every operation, so /docs and OpenAPI clients (and the fuzzer) know them.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Malformed input: the detail says what to fix"),
        (401, "A bearer token is needed, or the one given is wrong"),
        (
            403,
            "A valid, unexpired playback token is needed, or a direct upload URL's rules "
            "refuse it (another origin, another upload)",
        ),
        (404, "No such video, upload, rendition or file"),
        (409, "Conflicts with the current state (missing chunks, checksum, job state)"),
        (410, "Gone: an expired upload, or a direct upload URL expired or already used"),
        (413, "Over a configured size limit"),
        (422, "A field is missing or invalid, or the content is not a video"),
        (503, "It cannot be done right now (a file could not be made): try again later"),
        (507, "Not enough free disk space to accept it"),
    )
}


def error_body(code: str, detail: str) -> dict[str, str]:
    """The one JSON shape of every error response; the detail never names a server path."""
    return {"error": code, "detail": public_text(detail)}


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the catalogue's handlers on `app`."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        if exc.status >= 500 or public_text(exc.detail) != exc.detail:
            # The client gets the public detail (error_body): the log keeps it whole.
            level = logging.WARNING if exc.status >= 500 else logging.INFO
            log.log(level, "%s %s: %s: %s", request.method, request.url.path, exc.code, exc.detail)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc.code, exc.detail), exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_input", _describe_validation(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # The server closes the connection once this answer is out (Starlette raises the
        # error again after it, and uvicorn then closes): said in the answer, the gateway's
        # pool drops the connection instead of sending the next request down it, which for
        # a request with a body (not sent twice) was a 502.
        return JSONResponse(
            error_body("internal", "internal error; see the service log"),
            500,
            headers={"Connection": "close"},
        )
