"""The ingest benchmark's floor (scripts/bench_receiver.py) stores what it is sent, whole and
in place, tail included: a baseline that dropped bytes would flatter the upload service."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_receiver  # noqa: E402

CHUNK = 1024 * 1024


def test_the_minimal_receiver_writes_every_chunk_at_its_place(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 12345)  # the last chunk is not a whole page
    target = tmp_path / "received.bin"
    argv = [sys.executable, str(ROOT / "scripts" / "bench_receiver.py"), str(target)]
    with subprocess.Popen([*argv, str(CHUNK), "2"], stdout=subprocess.PIPE, text=True) as receiver:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        first, second = (socket.create_connection(("127.0.0.1", port)) for _ in range(2))
        # Out of order, over two connections, as the benchmark's senders may deliver them.
        for conn, index in ((second, 3), (first, 1), (second, 0), (first, 2)):
            piece = data[index * CHUNK : (index + 1) * CHUNK]
            conn.sendall(bench_receiver.HEADER.pack(index * CHUNK, len(piece)) + piece)
            assert conn.recv(1) == b"k"
        first.close()
        second.close()
        user, system = map(float, receiver.stdout.readline().split())
        assert receiver.wait(timeout=30) == 0
    assert user >= 0 and system >= 0
    assert target.read_bytes() == data
