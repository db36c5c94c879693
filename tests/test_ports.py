"""The test platforms' ports: picked where no outgoing connection can take them first."""

import socket

from tests.harness import _ephemeral_ports, free_ports, port_pool


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
