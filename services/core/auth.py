"""Access: bearer tokens compared in constant time.

ADMIN_TOKEN guards the admin service, every DELETE, stop and resume, transcoding control and
the metadata service's writes. When it is not set, one is generated once into
`STORAGE_DIR/admin_token` (mode 600) and shared by every service on that storage. UPLOAD_TOKEN,
when set, closes uploading too. Watching stays open (see PLAYBACK_SIGNING_KEY for private
playback).
"""

import hmac
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.types import Scope

from services.core.errors import Unauthorized
from services.core.settings import Settings, get_settings

TOKEN_FILE = "admin_token"
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def token_path(settings: Settings) -> Path:
    return Path(settings.storage_dir) / TOKEN_FILE


def ensure_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token (ADMIN_TOKEN, else the stored one, else a new one); and whether new."""
    if settings.admin_token:
        return settings.admin_token, False
    path = token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: several services starting at once agree on the one token the first wrote.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header as HTTPBearer reads it ('' when
    there is none)."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if scheme.lower() == "bearer" else ""


def _check(given: str, expected: str, what: str) -> None:
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized(
            f"{what} needs 'Authorization: Bearer <token>'"
            + (" (the token given is wrong)" if given else "")
        )


# Token per storage folder, read once: the file never changes after it is written.
_TOKENS: dict[str, str] = {}


def admin_token(settings: Settings) -> str:
    """The admin token in force, without touching the disk after the first request."""
    key = f"{settings.admin_token}|{settings.storage_dir}"
    if key not in _TOKENS:
        _TOKENS[key], _ = ensure_admin_token(settings)
    return _TOKENS[key]


def check_admin(given: str, settings: Settings) -> None:
    """`given` is the admin token, else Unauthorized."""
    _check(given, admin_token(settings), "this operation (admin)")


def check_uploader(given: str, settings: Settings) -> None:
    """`given` is the upload token when UPLOAD_TOKEN is set, else Unauthorized."""
    if settings.upload_token:
        _check(given, settings.upload_token, "uploading")


def _given(credentials: HTTPAuthorizationCredentials | None) -> str:
    return credentials.credentials if credentials else ""


def require_admin(
    credentials: Credentials, settings: Annotated[Settings, Depends(get_settings)]
) -> None:
    """FastAPI dependency: the request carries the admin token."""
    check_admin(_given(credentials), settings)


def require_uploader(
    credentials: Credentials, settings: Annotated[Settings, Depends(get_settings)]
) -> None:
    """FastAPI dependency: uploading is open unless UPLOAD_TOKEN is set."""
    check_uploader(_given(credentials), settings)


@dataclass(frozen=True)
class Presented:
    """What a request shows before its body is read: its bearer token, query, path
    parameters and Origin (a direct upload URL carries its token in the query)."""

    bearer: str
    query: QueryParams
    path_params: Mapping[str, Any]
    origin: str | None

    @classmethod
    def of(cls, scope: Scope) -> "Presented":
        """From an ASGI scope whose route has been matched (its path parameters known)."""
        headers = Headers(scope=scope)
        return cls(
            bearer=bearer_token(headers.get("authorization")),
            query=QueryParams(scope.get("query_string", b"")),
            path_params=scope.get("path_params", {}),
            origin=headers.get("origin"),
        )


TokenCheck = Callable[[Presented, Settings], Any]
# Each dependency above, as the same check made from what the request shows before its body:
# services.core.bodies makes it before the first body byte is read (FastAPI reads a body
# before dependencies run). Services add their own (the upload service's direct uploads).
TOKEN_CHECKS: dict[Callable[..., Any], TokenCheck] = {
    require_admin: lambda presented, settings: check_admin(presented.bearer, settings),
    require_uploader: lambda presented, settings: check_uploader(presented.bearer, settings),
}
# Checks that may wait on the database, each with what tells when it does (a direct upload's
# token is looked up; a request without one gets a comparison): then made in a worker thread,
# never on the event loop, where every other request would wait for the database too.
WAITS: dict[TokenCheck, Callable[[Presented], bool]] = {}
# Where a request's scope keeps what its token checks found, by check (see check_once).
CHECKED = "platform.token_checks"


async def check_once(scope: Scope, check: TokenCheck, settings: Settings) -> Any:
    """What `check` finds for the request of `scope` (a grant, None), made once per request:
    before its first body byte (services.core.bodies) or by the route's dependency, whichever
    comes first; the other takes that finding. A refusal raises and records nothing."""
    found: dict[TokenCheck, Any] = scope.setdefault(CHECKED, {})
    if check not in found:
        presented = Presented.of(scope)
        waits = WAITS.get(check)
        if waits is not None and waits(presented):
            found[check] = await run_in_threadpool(check, presented, settings)
        else:
            found[check] = check(presented, settings)
    return found[check]


AdminOnly = [Depends(require_admin)]
UploaderOnly = [Depends(require_uploader)]
