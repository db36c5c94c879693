"""tus 1.0 from the client's side: create an upload, ask where it stands, send the rest.

The platform's `/files/` keeps every byte that reached it, even from a PATCH cut off
mid-body, and says how many with `Upload-Offset` (HEAD). So resuming is: HEAD, then send
from that offset; nothing the server has is sent twice. A PATCH refused because another one
still holds the upload (423: the server is finishing the body of a client that went away) or
because the offset moved (409) is retried from a fresh HEAD; a broken connection is retried a
few times with a growing pause.
"""

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx

from vp import errors
from vp.api import Api

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
BLOCK = 64 * 1024
# Pauses before each retry of a PATCH whose connection broke (as tus-js-client's retryDelays).
RETRY_DELAYS = (0.5, 1.0, 3.0, 5.0)
# 423/409 are normal right after an interrupted run, until the server has stored what arrived.
BUSY_RETRIES, BUSY_PAUSE = 120, 0.25

Report = Callable[[int], None]


@dataclass
class Transfer:
    """One upload on the server: its URL, the file's size and how much the server has."""

    url: str
    size: int
    offset: int

    @property
    def video_id(self) -> str:
        """The upload's id, which is the video's id."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


class Throttle:
    """Holds the average rate at or under `rate` bytes a second (None: as fast as it goes)."""

    def __init__(
        self,
        rate: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.start = clock()
        self.spent = 0

    def spend(self, count: int) -> None:
        """Account for `count` bytes about to go; waits until the rate allows them."""
        self.spent += count
        if self.rate:
            ahead = self.spent / self.rate - (self.clock() - self.start)
            if ahead > 0:
                self.sleep(ahead)


def metadata_header(pairs: dict[str, str]) -> str:
    """Upload-Metadata: `key base64(value)` pairs, comma-separated."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in pairs.items()
    )


def create(api: Api, *, size: int, metadata: dict[str, str], subject: str) -> Transfer:
    """POST /files/: a new upload of `size` bytes; its URL is absolute."""
    headers = {**TUS, "Upload-Length": str(size), "Upload-Metadata": metadata_header(metadata)}
    response = api.call(
        "POST", "/files/", subject=subject, ok=(201,), uploading=True, headers=headers
    )
    location = response.headers.get("location")
    if not location:
        raise errors.CliError(f"{api.target.server} is not a tus server (no Location at /files/)")
    return Transfer(urljoin(f"{api.target.server}/files/", location), size, 0)


def find(api: Api, url: str, *, size: int, subject: str) -> Transfer | None:
    """HEAD: the upload at `url` with the server's offset; None when the server no longer has
    it (expired, removed, never finished) or it is not this file's size."""
    response = api.call(
        "HEAD", url, subject=subject, ok=(200, 404, 410), uploading=True, headers=TUS
    )
    if response.status_code != 200 or response.headers.get("upload-length") != str(size):
        return None
    return Transfer(url, size, int(response.headers.get("upload-offset", "0")))


def _blocks(
    path: Path, start: int, length: int, throttle: Throttle, report: Report
) -> Iterator[bytes]:
    """The file's bytes [start, start + length) in blocks; reports each block once it has gone
    (httpx asks for the next one only after writing this one)."""
    with path.open("rb") as source:
        source.seek(start)
        sent = 0
        while sent < length:
            block = source.read(min(BLOCK, length - sent))
            if not block:
                raise errors.CliError(f"{path} got shorter while it was uploading: run again")
            throttle.spend(len(block))
            errors.raise_if_interrupted()
            yield block
            sent += len(block)
            report(start + sent)


def _patch(
    api: Api, transfer: Transfer, path: Path, length: int, throttle: Throttle, report: Report
) -> httpx.Response:
    headers = {
        **TUS,
        "Upload-Offset": str(transfer.offset),
        "Content-Type": OFFSET_STREAM,
        # Given, so httpx sends a plain body rather than chunked encoding.
        "Content-Length": str(length),
    }
    body = _blocks(path, transfer.offset, length, throttle, report)
    return api.send("PATCH", transfer.url, uploading=True, headers=headers, content=body)


def _refresh(api: Api, transfer: Transfer, subject: str) -> None:
    """Take the server's offset (after a refused or broken PATCH)."""
    found = find(api, transfer.url, size=transfer.size, subject=subject)
    if found is None:
        raise errors.CliError(
            f"the server dropped the upload of {subject} (expired or removed): run again to "
            "start over"
        )
    transfer.offset = found.offset


def send(
    api: Api,
    transfer: Transfer,
    path: Path,
    *,
    chunk_size: int,
    throttle: Throttle,
    report: Report,
    subject: str,
) -> None:
    """PATCH the rest of the file, `chunk_size` bytes at a time, until the server has it all.
    The last PATCH is answered once the server has checked and registered the video."""
    broken, busy = 0, 0
    while transfer.offset < transfer.size:
        errors.raise_if_interrupted()
        length = min(chunk_size, transfer.size - transfer.offset)
        try:
            response = _patch(api, transfer, path, length, throttle, report)
        except httpx.TransportError as exc:
            # Some of the body may have been stored: the next PATCH's 409 says where to go on.
            if broken == len(RETRY_DELAYS):
                raise _lost(api, transfer, subject) from exc
            time.sleep(RETRY_DELAYS[broken])
            broken += 1
            continue
        if _busy(response) and busy < BUSY_RETRIES:
            busy += 1
            time.sleep(BUSY_PAUSE)
            _refresh(api, transfer, subject)
            report(transfer.offset)
            continue
        if response.status_code != 204:
            raise api.refused(response, subject=subject, uploading=True)
        transfer.offset = int(response.headers.get("upload-offset", transfer.offset + length))
        broken, busy = 0, 0
        report(transfer.offset)


def _busy(response: httpx.Response) -> bool:
    """Locked by another PATCH, or the offset has moved: worth a fresh HEAD and a retry."""
    if response.status_code == 423:
        return True
    return response.status_code == 409 and errors.code_of(response) == "offset_mismatch"


def _lost(api: Api, transfer: Transfer, subject: str) -> errors.CliError:
    return errors.CliError(
        f"lost the connection to {api.target.server} with {transfer.offset} of "
        f"{transfer.size} bytes of {subject} stored: run the same command again to resume"
    )
