"""The ingest benchmark's floor: the least a receiver of the platform's design spends per byte,
measured in the same run as the upload service (scripts/bench_ingest.py starts it).

    python scripts/bench_receiver.py TARGET CHUNK CONNECTIONS

A plain process, standard library only (no HTTP, no framework, no database, none of the
platform's modules in its heap): it takes CONNECTIONS connections, each carrying chunks of
at most CHUNK bytes as a 16-byte header (offset, length) and the bytes. Every byte is received
straight into a page-aligned buffer, fed to one running sha256 (the platform hashes every byte
of the file once; this one takes the bytes in the order they arrive, which costs the same and is
not the file's digest), written at its offset past the page cache (O_DIRECT, as the service
writes chunks) and fdatasynced before a one-byte answer. It prints its port, then, once every
sender has hung up, its user and system CPU seconds.
"""

import hashlib
import mmap
import os
import resource
import socket
import struct
import sys
import threading

HEADER = struct.Struct("!QQ")


def serve(conn: socket.socket, chunk: int, direct: int, plain: int, digest, lock) -> None:  # type: ignore[no-untyped-def]
    """Receive, hash, write and sync one connection's chunks until it hangs up."""
    buffer = mmap.mmap(-1, chunk)
    view = memoryview(buffer)
    with conn:
        while header := conn.recv(HEADER.size, socket.MSG_WAITALL):
            offset, length = HEADER.unpack(header)
            if length > chunk:
                raise SystemExit(f"a chunk of {length} bytes, over {chunk}")
            got = 0
            while got < length:
                read = conn.recv_into(view[got:length])
                if not read:
                    raise SystemExit("the sender hung up inside a chunk")
                got += read
            with lock:  # one running digest, as the platform keeps one per file (arrival order)
                digest.update(view[:length])
            aligned = length - length % mmap.PAGESIZE
            if aligned:
                os.pwrite(direct, view[:aligned], offset)
            if aligned < length:
                os.pwrite(plain, view[aligned:length], offset + aligned)
            os.fdatasync(direct)
            conn.sendall(b"k")
    view.release()
    buffer.close()


def main() -> None:
    target, chunk, connections = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    direct = os.open(target, os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o600)
    plain = os.open(target, os.O_WRONLY)
    digest, lock = hashlib.sha256(), threading.Lock()
    threads = []
    for _ in range(connections):
        conn, _ = listener.accept()
        args = (conn, chunk, direct, plain, digest, lock)
        threads.append(threading.Thread(target=serve, args=args))
        threads[-1].start()
    for thread in threads:
        thread.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(usage.ru_utime, usage.ru_stime, flush=True)


if __name__ == "__main__":
    main()
