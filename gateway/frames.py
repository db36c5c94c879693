"""Who may put the gateway's answers in a frame: nobody, but for the embeddable player.

Clickjacking works by framing a page (the console, a delete button) invisibly on another site,
so every answer says it may not be framed: `X-Frame-Options: DENY` for older browsers and
`Content-Security-Policy: frame-ancestors 'none'` for current ones. An answer that sets its own
`frame-ancestors` (the /embed/ page: EMBED_FRAME_ANCESTORS) keeps it and gets neither.
"""

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DENY_FRAMING = "frame-ancestors 'none'"


def frame_policy(sources: str) -> str:
    """The CSP that lets `sources` (EMBED_FRAME_ANCESTORS, checked at start-up) frame a page."""
    return f"frame-ancestors {sources}"


def _allows_itself(headers: MutableHeaders) -> bool:
    return any("frame-ancestors" in policy for policy in headers.getlist("content-security-policy"))


class FrameGuard:
    """ASGI middleware: every HTTP answer that does not name its framers may not be framed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the answer's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if not _allows_itself(headers):
                    headers["x-frame-options"] = "DENY"
                    headers.append("content-security-policy", DENY_FRAMING)
            await send(message)

        await self.app(scope, receive, guarded)
