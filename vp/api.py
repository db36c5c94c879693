"""The platform's HTTP API as the client uses it: one pooled httpx client per run, and the one
place where transport failures and refused requests become one-line `CliError`s."""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from vp import errors

DEFAULT_SERVER = "http://127.0.0.1:8000"
# Reads wait long: the last bytes of an upload are answered once the server has probed the
# file (bounded on the server) and registered it.
TIMEOUT = httpx.Timeout(30.0, read=300.0)


@dataclass(frozen=True)
class Target:
    """Which platform, and the tokens to show it."""

    server: str
    token: str | None = None
    upload_token: str | None = None

    @classmethod
    def of(cls, server: str, token: str | None, upload_token: str | None = None) -> "Target":
        """A target from the options as given (empty strings mean not given)."""
        base = server.strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise errors.CliError(
                f"--server must be an http(s) URL such as {DEFAULT_SERVER}, not {server!r}"
            )
        return cls(base, token or None, upload_token or token or None)


class Api:
    """A client of one platform; every method answers or raises `CliError`."""

    def __init__(self, target: Target, *, transport: httpx.BaseTransport | None = None) -> None:
        self.target = target
        # No proxies from the environment: the platform is usually this machine or a LAN host.
        self.http = httpx.Client(
            base_url=target.server, timeout=TIMEOUT, transport=transport, trust_env=False
        )

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def _auth(self, uploading: bool) -> dict[str, str]:
        token = self.target.upload_token if uploading else self.target.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def send(
        self, method: str, url: str, *, uploading: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One request with the right token; transport errors are left to the caller."""
        headers = {**self._auth(uploading), **kwargs.pop("headers", {})}
        return self.http.request(method, url, headers=headers, **kwargs)

    def call(
        self,
        method: str,
        url: str,
        *,
        subject: str,
        ok: Iterable[int] = (200,),
        uploading: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """A request whose every failure is a `CliError` about `subject`."""
        try:
            response = self.send(method, url, uploading=uploading, **kwargs)
        except httpx.TransportError as exc:
            raise errors.unreachable(self.target.server, exc) from exc
        if response.status_code not in tuple(ok):
            raise self.refused(response, subject=subject, uploading=uploading)
        return response

    def refused(
        self, response: httpx.Response, *, subject: str, uploading: bool
    ) -> errors.CliError:
        """The `CliError` for a refused request."""
        given = self.target.upload_token if uploading else self.target.token
        return errors.for_status(
            response, subject=subject, token_given=given is not None, uploading=uploading
        )

    def body(self, response: httpx.Response, kind: type) -> Any:
        """The JSON body, of `kind` (dict or list); else the server is not the platform."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, kind):
            raise errors.CliError(
                f"{self.target.server} did not answer {response.url.path} as the platform does: "
                "is --server (VP_SERVER) the platform's gateway?"
            )
        return body

    # --- the endpoints -----------------------------------------------------------------------

    def videos(self, *, status: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest videos (metadata service)."""
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        response = self.call("GET", "/videos", subject="the video list", params=params)
        listed: list[dict[str, Any]] = self.body(response, list)
        return listed

    def video(self, video_id: str) -> dict[str, Any]:
        """One video's record."""
        response = self.call("GET", f"/videos/{video_id}", subject=f"video {video_id}")
        record: dict[str, Any] = self.body(response, dict)
        return record

    def job(self, video_id: str) -> dict[str, Any] | None:
        """The video's transcoding status; None while it has no job (still uploading)."""
        response = self.call(
            "GET", f"/transcode/status/{video_id}", subject=f"video {video_id}", ok=(200, 404)
        )
        return None if response.status_code == 404 else self.body(response, dict)

    def delete(self, video_id: str) -> None:
        """Remove the video, its original and every rendition (admin)."""
        self.call("DELETE", f"/videos/{video_id}", subject=f"video {video_id}")

    def playback_token(self, video_id: str, ttl: int) -> dict[str, Any] | None:
        """A signed playback token (admin); None when the server plays every video openly."""
        response = self.call(
            "POST",
            f"/admin/videos/{video_id}/playback_token",
            subject=f"video {video_id}",
            params={"ttl": ttl},
            ok=(200, 409),
        )
        return None if response.status_code == 409 else self.body(response, dict)

    def check_admin_token(self) -> None:
        """Fails as a 401 would, unless the admin token is right: asked of an id no video has,
        the admin service answers 404 to the right token and 401 to any other."""
        self.call(
            "POST",
            f"/admin/videos/{uuid.uuid4().hex}/playback_token",
            subject="the admin token check",
            ok=(404,),
        )

    def playback_is_private(self) -> bool:
        """Whether this server plays videos only with a signed token (PLAYBACK_SIGNING_KEY).

        Privacy is the deployment's: without a token the streaming service refuses any video
        id (403) before it looks the id up, so a fresh id, which no video has, tells. An open
        server answers 404 for it.
        """
        probe = uuid.uuid4().hex
        response = self.call(
            "GET", f"/stream/{probe}/qualities", subject="the playback check", ok=(403, 404)
        )
        return response.status_code == 403
