"""What the client says when something fails: one line that tells the user what to do.

    CliError              exit 1: printed as `vp: <message>`, nothing else
    └── Rejected          the server refused the request for what it names (400, 413, 422):
                          the other files of the same `vp upload` still go

Every HTTP answer and transport failure is turned into one of these at one boundary
(`vp.api.Api`), from the status and the platform's `{"error", "detail"}` body.
"""

import signal
from types import FrameType

import httpx

INTERRUPTED = 130  # the shell's code for a program ended by Ctrl-C

_interrupted = False


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def latch_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered, so that
    `raise_if_interrupted` raises it again where the first one was lost: Python drops an
    exception raised inside a finalizer (`__del__`, a weakref callback) with a warning, and a
    signal handler runs inside whatever Python code is running, finalizers included."""
    signal.signal(signal.SIGINT, _on_interrupt)


def raise_if_interrupted() -> None:
    """KeyboardInterrupt if Ctrl-C was pressed since `latch_interrupts`."""
    if _interrupted:
        raise KeyboardInterrupt


class CliError(Exception):
    """A failure the user can act on; `message` is the whole of what is printed."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = one_line(message)
        self.exit_code = exit_code


class Rejected(CliError):
    """The server refused this file for what it is; the next file may still go."""


def one_line(text: str) -> str:
    """`text` on a single line (server details may carry line breaks)."""
    return " ".join(text.split())


def _body(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def code_of(response: httpx.Response) -> str:
    """The platform's error `code` ('' when the body has none)."""
    code = _body(response).get("error")
    return code if isinstance(code, str) else ""


def detail_of(response: httpx.Response) -> str:
    """The platform's `detail`, else the start of whatever the body is."""
    detail = _body(response).get("detail")
    if isinstance(detail, str):
        return detail
    text = response.text.strip()
    return text[:200] if text else response.reason_phrase


def unreachable(server: str, exc: httpx.TransportError) -> CliError:
    """The server did not answer at all."""
    if isinstance(exc, httpx.TimeoutException):
        return CliError(
            f"{server} did not answer in time ({type(exc).__name__}): is it overloaded? "
            "try again later"
        )
    return CliError(
        f"cannot reach the platform at {server}: is it running? "
        "(point --server or VP_SERVER at its gateway)"
    )


def unauthorized(*, token_given: bool, uploading: bool) -> CliError:
    """401: which token to set, and where it comes from."""
    if uploading:
        where = "set VP_UPLOAD_TOKEN (or VP_TOKEN, --token) to the server's UPLOAD_TOKEN"
        if token_given:
            return CliError(f"the upload token given was refused: {where}")
        return CliError(f"this server needs a token to upload: {where}")
    where = (
        "set VP_TOKEN or --token to the server's ADMIN_TOKEN "
        "(shared_storage/admin_token on the server)"
    )
    if token_given:
        return CliError(f"the admin token given was refused: {where}")
    return CliError(f"this needs the admin token: {where}")


def for_status(
    response: httpx.Response, *, subject: str, token_given: bool, uploading: bool
) -> CliError:
    """The one line for a refused request about `subject` (a video id or a file name)."""
    status, detail = response.status_code, detail_of(response)
    if status == 401:
        return unauthorized(token_given=token_given, uploading=uploading)
    if status == 403:
        return CliError(f"{subject} is private: get a signed link with `vp token ID` ({detail})")
    if status == 404:
        return CliError(f"{subject} is not on this server: `vp list` shows the videos")
    if status == 400:
        return Rejected(f"{subject}: {detail}")
    if status == 413:
        return Rejected(f"{subject} is too large for this server: {detail}")
    if status == 422:
        return Rejected(f"the server refused {subject}: {detail}")
    if status == 507:
        return CliError(f"the server's disk is too full to take {subject}: {detail}")
    if status >= 500:
        return CliError(f"the server failed ({status}) on {subject}: {detail}; try again later")
    return CliError(f"{subject}: {detail} (HTTP {status})")
