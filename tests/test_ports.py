"""The test platforms' ports: picked where no outgoing connection can take them first."""

import json
import socket
import subprocess
import sys

from tests.harness import PORT_BLOCK, ROOT, _ephemeral_ports, free_ports, port_pool


def test_a_connections_source_port_cannot_then_be_listened_on():
    """Why free_ports avoids the ephemeral range: an outgoing connection took the port (as
    any service's or the database driver's can, between a free-port check and the bind),
    and a server binding it as uvicorn does (SO_REUSEADDR) fails."""
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as client,
        socket.socket() as server,
    ):
        source = client.getsockname()[1]
        assert source in _ephemeral_ports()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", source))
            server.listen()
            taken = False
        except OSError:
            taken = True
    assert taken


def test_free_ports_are_outside_the_ephemeral_range_distinct_and_never_handed_out_twice():
    pool, ephemeral = port_pool(), _ephemeral_ports()
    assert set(pool).isdisjoint(ephemeral) and len(pool) >= 4096
    handed: list[int] = []
    for _ in range(50):
        ports = free_ports(6)
        assert len(set(ports)) == 6
        assert all(p in pool for p in ports)
        handed += ports
    assert len(set(handed)) == len(handed)


def test_a_free_port_can_be_listened_on():
    for port in free_ports(10):
        with socket.create_server(("127.0.0.1", port)):
            pass


# Run in a second process: its ports, and which of the given blocks it could lock itself.
OTHER = """
import fcntl, json, os, sys
from tests.harness import PORT_LOCKS, free_ports
ports = free_ports(int(sys.argv[1]))
lockable = []
for start in json.loads(sys.argv[2]):
    fd = os.open(PORT_LOCKS / f"{start}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lockable.append(start)
    except BlockingIOError:
        pass
print(json.dumps([ports, lockable]))
"""


def test_another_process_never_gets_a_port_of_this_one_s_blocks():
    """Two lanes of make test pick ports at the same time: each takes them only from blocks
    it holds a lock on, so neither can take a port the other has handed out and not yet
    bound."""
    count = 3 * PORT_BLOCK

    def block(port: int) -> int:
        return port - (port - port_pool().start) % PORT_BLOCK

    blocks = sorted({block(p) for p in free_ports(count)})
    other = subprocess.run(
        [sys.executable, "-c", OTHER, str(count), json.dumps(blocks)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    theirs, lockable = json.loads(other.stdout)
    assert len(theirs) == count
    assert lockable == []
    assert not {block(p) for p in theirs} & set(blocks)
