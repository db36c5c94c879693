"""The body of `POST /upload/chunk`, read as it arrives and written straight to the chunk's
place in the upload's file: no temporary file, no second copy.

Two forms are accepted:

- `multipart/form-data` with the fields `upload_id`, `index` and `file` (the reference
  contract), parsed with python-multipart's streaming parser;
- the chunk's bytes as an `application/octet-stream` body, with `upload_id` and `index` in the
  query string (no multipart framing at all).

Either form may carry the chunk's sha256, to have the chunk counted only if its bytes match:
a `Content-Digest: sha-256=:BASE64:` header on a raw body (RFC 9530), a `sha256` field (hex)
in a form. (On a form, Content-Digest would cover the framing too; it is not read there.)

A multipart chunk goes straight to its place when `upload_id` and `index` come before `file`
(as browsers, `curl -F` and the README send them) and the upload's chunk size is known
(declared at init, or learnt from an earlier chunk). Otherwise its place depends on what has
not arrived yet, so it is spooled first and stored afterwards, the slower way that is always
right.

An error found once the body has started is answered after the rest of the body is read (up
to the largest chunk plus framing): a server that answers and closes while the client is
still sending makes most clients see a reset instead of the answer.
"""

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from tempfile import SpooledTemporaryFile
from typing import IO, Any, BinaryIO, cast

from anyio import to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from services.core.errors import AppError, InvalidInput, TooLarge
from services.core.settings import Settings
from services.core.storage import Storage
from services.core.tasks import while_busy
from services.upload import digests, direct, uploads
from services.upload.chunkfile import Buffer

# Bytes handed to a worker thread at once: large enough that the thread hops are few (each
# wakes a thread and passes the GIL back and forth: 1 MiB batches cost the upload service about
# 11 % more CPU per GiB than 4 MiB ones, measured by raw 1 GiB uploads taking turns), small
# enough that a chunk in flight holds little memory (two batches: the one written, the next)
# and that part of a chunk is on disk before its end arrives.
FLUSH_BYTES = 2 * 1024 * 1024
FLUSH_PIECES = 256
FIELD_LIMIT = 1024  # upload_id and index are a few dozen bytes
FRAMING_BYTES = 64 * 1024  # multipart boundaries and part headers around the chunk
SPOOL_IN_MEMORY = 1024 * 1024
MAX_INDEX = 2**31
FORMS = (
    "multipart/form-data with the fields upload_id, index and file, or an "
    "application/octet-stream body with ?upload_id=...&index=... in the URL"
)


class Body:
    """The request's body as pieces, read once, refused past `limit` bytes."""

    def __init__(self, request: Request, limit: int) -> None:
        self._stream = request.stream()
        self.limit = limit
        self.received = 0
        self.done = False

    async def next(self) -> bytes | None:
        """The next piece, or None at the end of the body."""
        while not self.done:
            try:
                piece = await anext(self._stream)
            except StopAsyncIteration:
                self.done = True
                return None
            except ClientDisconnect:
                self.done = True
                raise InvalidInput(
                    "the connection closed before the whole chunk arrived; send it again"
                ) from None
            self.received += len(piece)
            if self.received > self.limit:
                raise TooLarge(f"the request body is over {self.limit} bytes: send smaller chunks")
            if piece:
                return piece
        return None

    async def pieces(self) -> AsyncIterator[Buffer]:
        """Every remaining piece."""
        while (piece := await self.next()) is not None:
            yield piece

    async def drain(self) -> None:
        """Read (and drop) what is left, so the client gets to read the answer."""
        try:
            while await self.next() is not None:
                pass
        except AppError:
            pass  # over the limit or gone: the connection will be closed instead


async def receive(
    request: Request,
    settings: Settings,
    storage: Storage,
    *,
    upload_id: str | None,
    index: int | None,
    grant: direct.Grant | None = None,
    content_digest: str | None = None,
) -> uploads.ChunkReceipt:
    """Store the chunk this request carries (in either form); its receipt. With a direct
    upload's `grant`, only for that grant's upload; with a raw body's `content_digest` (the
    Content-Digest header), only if the bytes match its sha-256."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    body = Body(request, settings.max_chunk_bytes + FRAMING_BYTES)
    try:
        if kind == b"application/octet-stream":
            length = _content_length(request)
            sha256 = digests.content_digest_sha256(content_digest)
            return await _octet_stream(
                body, settings, storage, upload_id, index, length, grant, sha256
            )
        if kind == b"multipart/form-data":
            boundary = options.get(b"boundary", b"")
            return await _multipart(body, settings, storage, boundary, grant)
        raise InvalidInput(f"send the chunk as {FORMS}")
    except Exception:
        await body.drain()
        raise


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def identify(
    upload_id: str | None,
    index: str | int | None,
    where: str,
    grant: direct.Grant | None = None,
) -> tuple[str, int]:
    """The chunk's upload id and index, checked to be present and the index a number (and
    the upload the direct upload `grant` opens, with one)."""
    if upload_id is None or index is None:
        raise InvalidInput(f"upload_id and index are both needed, as {where}")
    if grant is not None:
        direct.only(grant, upload_id)
    if isinstance(index, str):
        text = index.strip()
        if not text.isascii() or not text.isdigit():
            raise InvalidInput(f"index must be a whole number from 0 up, not {index[:20]!r}")
        index = int(text)
    if not 0 <= index <= MAX_INDEX:
        raise InvalidInput(f"index must be between 0 and {MAX_INDEX}")
    return upload_id, index


async def _octet_stream(
    body: Body,
    settings: Settings,
    storage: Storage,
    upload_id: str | None,
    index: int | None,
    length: int | None,
    grant: direct.Grant | None,
    sha256: str | None,
) -> uploads.ChunkReceipt:
    where = "query parameters (?upload_id=...&index=...)"
    upload_id, number = identify(upload_id, index, where, grant)
    intake = await _open(settings, storage, upload_id, number, length, sha256)
    if intake is None:  # no Content-Length, and the upload's chunk size is not known yet
        return await _spool_and_store(
            settings, storage, body.pieces(), lambda: (upload_id, number, sha256)
        )
    with intake:
        return await _pump(intake, body.pieces(), announced=length)


async def _multipart(
    body: Body, settings: Settings, storage: Storage, boundary: bytes, grant: direct.Grant | None
) -> uploads.ChunkReceipt:
    form = FormReader(boundary, body.limit, grant)
    while not form.file_started and (piece := await body.next()) is not None:
        form.write(piece)
    if not form.file_started:
        raise InvalidInput("the form has no 'file' part: send the chunk's bytes as a file field")
    if "upload_id" in form.fields and "index" in form.fields:
        upload_id, number, sha256 = form.identify()
        intake = await _open(settings, storage, upload_id, number, None, sha256)
        if intake is not None:
            with intake:
                return await _pump(intake, form.file_pieces(body))
    # The file came before the fields, or its place depends on its size: spool it first.
    return await _spool_and_store(settings, storage, form.file_pieces(body), form.identify)


async def _open(
    settings: Settings,
    storage: Storage,
    upload_id: str,
    index: int,
    size: int | None,
    sha256: str | None,
) -> uploads.ChunkIntake | None:
    """open_chunk in a worker thread; a busy chunk is waited for here, holding no thread."""
    opener = partial(
        uploads.open_chunk,
        settings,
        storage,
        upload_id=upload_id,
        index=index,
        size=size,
        sha256=sha256,
    )
    return await while_busy(
        opener, uploads.ChunkBusy, wait=uploads.LOCK_WAIT_SECONDS, pause=uploads.LOCK_POLL_SECONDS
    )


async def _batches(pieces: AsyncIterator[Buffer]) -> AsyncIterator[tuple[list[Buffer], bool]]:
    """The pieces grouped into batches of about FLUSH_BYTES, each with whether it is the last
    (the last may be empty; no other is)."""
    batch: list[Buffer] = []
    size = 0
    async for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= FLUSH_BYTES or len(batch) >= FLUSH_PIECES:
            yield batch, False
            batch, size = [], 0
    yield batch, True


async def _pump(
    intake: uploads.ChunkIntake, pieces: AsyncIterator[Buffer], *, announced: int | None = None
) -> uploads.ChunkReceipt:
    """Feed the chunk's bytes to `intake` as they arrive, then finish it.

    Writes run in a worker thread, one batch at a time and in order, while the next batch is
    being received: the socket keeps flowing instead of pausing for every write. The last
    batch goes with `finish`, in one trip to a worker thread (a chunk of one batch takes two
    trips in all, `_open`'s and this one).
    """
    writing: asyncio.Future[None] | None = None
    try:
        async for batch, last in _batches(pieces):
            if writing is not None:
                await writing
                writing = None
            if last:
                break
            writing = asyncio.ensure_future(to_thread.run_sync(intake.feed, batch))
    finally:
        if writing is not None:
            # Something failed while a write was running: let it end before the file closes.
            await asyncio.gather(writing, return_exceptions=True)
    return await to_thread.run_sync(intake.finish, announced, batch)


async def _spool_and_store(
    settings: Settings,
    storage: Storage,
    pieces: AsyncIterator[Buffer],
    identity: Any,
) -> uploads.ChunkReceipt:
    """Collect the chunk in a temporary file, then store it (for when its place is unknown).
    `identity()` gives the upload id, the index and the client's sha256 once the body is in."""
    with SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        async for batch, _ in _batches(pieces):
            await to_thread.run_sync(_write_pieces, spool, batch)
        upload_id, number, sha256 = identity()
        store = partial(
            uploads.receive_chunk,
            settings,
            storage,
            upload_id=upload_id,
            index=number,
            data=cast(BinaryIO, spool),
            size=spool.tell(),
            sha256=sha256,
        )
        return await to_thread.run_sync(store)


def _write_pieces(spool: IO[bytes], batch: list[Buffer]) -> None:
    for piece in batch:
        spool.write(piece)


class FormReader:
    """python-multipart's streaming parser over a chunk's form: `upload_id` and `index` are
    kept (bounded), the `file` part's data is handed out as it is parsed, other parts are
    skipped. The parser itself bounds the part headers' count and size."""

    FIELDS = ("upload_id", "index", "sha256")

    def __init__(self, boundary: bytes, limit: int, grant: direct.Grant | None = None) -> None:
        if not boundary:
            raise InvalidInput("multipart/form-data needs a boundary in its Content-Type")
        self.grant = grant
        self.fields: dict[str, str] = {}
        self.file_started = self.file_ended = False
        self._pieces: list[Buffer] = []
        self._part: str | None = None  # "file", a field's name, or "" for a skipped part
        self._value = bytearray()
        self._header = (bytearray(), bytearray())
        self._disposition = b""
        callbacks: Any = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda d, s, e: self._header[0].extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header[1].extend(d[s:e]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }
        try:
            self._parser = MultipartParser(boundary, callbacks, max_size=limit)
        except FormParserError as exc:
            raise InvalidInput(f"the multipart boundary cannot be used: {exc}") from None

    def write(self, data: bytes) -> None:
        """Parse the next piece of the body."""
        try:
            self._parser.write(data)
        except FormParserError as exc:
            raise InvalidInput(f"the multipart form is malformed: {exc}") from None

    def take(self) -> list[Buffer]:
        """The file data parsed since the last call."""
        pieces, self._pieces = self._pieces, []
        return pieces

    def identify(self) -> tuple[str, int, str | None]:
        """upload_id, index and the chunk's sha256 (if given) from the form."""
        fields = self.fields
        upload_id, index = identify(
            fields.get("upload_id"), fields.get("index"), "form fields", self.grant
        )
        return upload_id, index, digests.hex_sha256(fields.get("sha256"), "the chunk's sha256")

    async def file_pieces(self, body: Body) -> AsyncIterator[Buffer]:
        """The file part's data to its end; then the rest of the form is read (and checked)."""
        while True:
            for piece in self.take():
                yield piece
            if self.file_ended:
                break
            data = await body.next()
            if data is None:
                raise InvalidInput("the body ended inside the file part: send the whole chunk")
            self.write(data)
        while (data := await body.next()) is not None:
            self.write(data)

    def _on_part_begin(self) -> None:
        self._part, self._disposition = None, b""
        self._value.clear()

    def _on_header_end(self) -> None:
        name, value = self._header
        if bytes(name).strip().lower() == b"content-disposition":
            self._disposition = bytes(value)
        name.clear()
        value.clear()

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise InvalidInput("a form part has no Content-Disposition name")
        if name == "file":
            if self.file_started:
                raise InvalidInput("the form has two 'file' parts: send one chunk per request")
            self.file_started = True
        elif name in self.FIELDS and name in self.fields:
            raise InvalidInput(f"the form has the field '{name}' twice")
        self._part = name if name == "file" or name in self.FIELDS else ""

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            # A view, not a copy: `data` is an immutable piece of the body (or the boundary).
            self._pieces.append(memoryview(data)[start:end])
        elif self._part:
            self._value.extend(data[start:end])
            if len(self._value) > FIELD_LIMIT:
                raise InvalidInput(f"the form field '{self._part}' is over {FIELD_LIMIT} bytes")

    def _on_part_end(self) -> None:
        if self._part == "file":
            self.file_ended = True
        elif self._part:
            self.fields[self._part] = self._value.decode("utf-8", "replace")
        self._part = None
