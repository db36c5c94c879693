"""uvicorn's httptools protocol, with fewer copies of a request's body on its way to the app
(the launcher runs the uvicorn services with it).

- **Read into one buffer** (`asyncio.BufferedProtocol`): the event loop reads the socket
  straight into a buffer of READ_BYTES that every connection of the thread shares, instead of
  into a fresh bytes object per read, and the parser reads it from there. The parser copies out
  whatever it hands on (header values, body pieces) before the next read can reuse it: the
  loop reads, then hands the bytes over (`buffer_updated`), one connection at a time.
- **Pieces handed over as they are**: uvicorn keeps the body received between two `receive()`
  calls in a bytearray; each piece the parser makes is copied into it (`+=`) and copied again
  into the bytes object `receive()` returns. Here a piece that waits alone is kept as it is
  (and `bytes()` of a bytes object is that object, no copy); only a second piece arriving
  before the app asks is joined, as before.

An upload chunk of 8 MiB arrives in reads of up to READ_BYTES. After each read its bytes were
copied four times (into a bytes object of their own, the parser's piece, uvicorn's bytearray,
the bytes `receive()` made), now once (the parser's piece). Raw 1 GiB uploads to the upload
service, taking turns with uvicorn's own protocol: 2.77 against 3.50 CPU-s per GiB (medians of
six), the event loop's thread 0.73-0.84 against 1.28-1.37 (see the README's benchmark notes).
"""

import asyncio
import threading
from typing import Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Bytes one socket read may bring in (uvloop's own reads take 256 KB): larger reads are fewer
# pieces for the app to handle per GiB. Raw uploads as above, 1 MiB against 256 KiB reads with
# this protocol: 2.61 against 2.99 CPU-s/GiB, 444 against 378 MB/s (medians of six). The price:
# a connection whose app has stopped reading (uvicorn pauses the socket past its high-water
# mark, 64 KiB) holds up to that and one read of body here, 1 MiB instead of 256 KB; the
# kernel's socket buffer may hold several MiB more (tcp_rmem allows 32 MiB on the bench machine).
READ_BYTES = 1024 * 1024

_buffers = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer (an event loop runs in one thread, and reads into it, then
    parses, one connection after another)."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(READ_BYTES))
    return view


class _PieceHttp(HttpToolsProtocol):
    """HttpToolsProtocol whose request body pieces reach the app uncopied."""

    def on_body(self, body: bytes) -> None:
        """A piece of the request body, parsed: kept for the app's next `receive()`."""
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        waiting = cycle.body
        if not waiting:
            cycle.body = body  # type: ignore[assignment]  # bytes: receive() takes it as is
        elif isinstance(waiting, bytearray):
            waiting += body
        else:  # a piece is already waiting: join from now on, as uvicorn does
            cycle.body = bytearray(waiting) + body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()


class PieceProtocol(asyncio.BufferedProtocol):
    """The connection as the event loop sees it: reads into the shared buffer, handed to a
    `_PieceHttp` that does the rest. (uvloop reads into a protocol's own buffer only when the
    protocol is not an `asyncio.Protocol`, which uvicorn's are: hence a wrapper, not a
    subclass.) uvicorn makes it as it makes its own (config, server_state, app_state)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.http = _PieceHttp(*args, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected."""
        self.http.connection_made(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection ended."""
        self.http.connection_lost(exc)

    def eof_received(self) -> bool | None:
        """The client closed its side (None: the transport closes, as uvicorn's does)."""
        self.http.eof_received()
        return None

    def pause_writing(self) -> None:
        """The transport's write buffer is full."""
        self.http.pause_writing()

    def resume_writing(self) -> None:
        """The transport's write buffer drained."""
        self.http.resume_writing()

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the event loop is to read the socket's next bytes."""
        return _read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were read into the buffer: parse them now, before the buffer is reused."""
        self.http.data_received(_read_buffer()[:nbytes])  # type: ignore[arg-type]
