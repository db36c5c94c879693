"""The body of `POST /videos/{id}/captions`, read by the route itself (ordinary forms take no
file part: services.core.bodies).

Two forms are accepted:

- `multipart/form-data` with the caption file as the part `file` and, optionally, the fields
  `language`, `label` and `default` (what `curl -F file=@en.vtt -F language=en` sends),
  parsed with python-multipart's parser;
- the file's text as the body (`Content-Type: text/vtt`, `application/x-subrip`,
  `text/plain` or `application/octet-stream`), the fields in the query string.

The body is bounded at CAPTION_MAX_BYTES plus the form's framing before it is read (the
route's `streamed_body` limit); the file part alone at CAPTION_MAX_BYTES.
"""

from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from services.core.errors import InvalidInput, TooLarge
from services.core.settings import Settings

FRAMING_BYTES = 16 * 1024  # boundaries, part headers and the short fields
FIELDS = ("language", "label", "default")
FIELD_LIMIT = 256
RAW_TYPES = (
    b"text/vtt",
    b"application/x-subrip",
    b"text/srt",
    b"text/plain",
    b"application/octet-stream",
)
FORMS = (
    "multipart/form-data with the file as the part 'file' (and language, label, default as "
    "fields), or the file's text as the body (Content-Type text/vtt or application/x-subrip) "
    "with ?language=...&label=... in the URL"
)


def body_limit(settings: Settings) -> int:
    """The most bytes the route reads: the largest caption file and the form around it."""
    return settings.caption_max_bytes + FRAMING_BYTES


@dataclass
class CaptionUpload:
    """What the request carried: the file's bytes, and the fields given in the form."""

    data: bytes
    fields: dict[str, str] = field(default_factory=dict)


async def read(request: Request, settings: Settings) -> CaptionUpload:
    """The caption file and fields of this request, in either form."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" and kind not in RAW_TYPES:
        raise InvalidInput(f"send the caption file as {FORMS}")
    body = await _whole(request, body_limit(settings))
    if kind != b"multipart/form-data":
        return CaptionUpload(body)
    return _multipart(body, options.get(b"boundary", b""), settings.caption_max_bytes)


async def _whole(request: Request, limit: int) -> bytes:
    """The whole body (small: bounded by `limit`)."""
    pieces, size = [], 0
    try:
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise TooLarge(f"the request body is over {limit} bytes (CAPTION_MAX_BYTES)")
            pieces.append(piece)
    except ClientDisconnect:
        raise InvalidInput("the connection closed before the whole body arrived") from None
    return b"".join(pieces)


def _multipart(body: bytes, boundary: bytes, file_limit: int) -> CaptionUpload:
    if not boundary:
        raise InvalidInput("multipart/form-data needs a boundary in its Content-Type")
    form = _Form(file_limit)
    try:
        parser = MultipartParser(boundary, form.callbacks(), max_size=len(body))
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise InvalidInput(f"the multipart form is malformed: {exc}") from None
    if form.file is None:
        raise InvalidInput("the form has no 'file' part: send the caption file as 'file'")
    if not form.file_ended:
        raise InvalidInput("the body ended inside the 'file' part: send the whole form")
    return CaptionUpload(bytes(form.file), form.fields)


class _Form:
    """python-multipart's callbacks, collecting the file part and the known fields."""

    def __init__(self, file_limit: int) -> None:
        self.file_limit = file_limit
        self.file: bytearray | None = None
        self.file_ended = False
        self.fields: dict[str, str] = {}
        self._name = ""
        self._value = bytearray()
        self._header = (bytearray(), bytearray())
        self._disposition = b""

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._header[0].extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header[1].extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._name, self._disposition = "", b""
        self._value.clear()

    def _header_end(self) -> None:
        name, value = self._header
        if bytes(name).strip().lower() == b"content-disposition":
            self._disposition = bytes(value)
        name.clear()
        value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name != "file" and name not in FIELDS:
            raise InvalidInput(
                f"unknown form field {name[:40]!r}: the form takes file, {', '.join(FIELDS)}"
            )
        if name in self.fields or (name == "file" and self.file is not None):
            raise InvalidInput(f"the form has the field '{name}' twice")
        self._name = name
        if name == "file":
            self.file = bytearray()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._name == "file":
            assert self.file is not None
            self.file.extend(data[start:end])
            if len(self.file) > self.file_limit:
                raise TooLarge(
                    f"the caption file is over {self.file_limit} bytes (CAPTION_MAX_BYTES)"
                )
            return
        self._value.extend(data[start:end])
        if len(self._value) > FIELD_LIMIT:
            raise InvalidInput(f"the form field '{self._name}' is over {FIELD_LIMIT} bytes")

    def _end(self) -> None:
        self.file_ended = self.file_ended or self._name == "file"
        if self._name and self._name != "file":
            try:
                self.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"the form field '{self._name}' is not UTF-8 text") from None
        self._name = ""
