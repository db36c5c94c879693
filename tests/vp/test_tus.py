"""The client's tus loop against a tus server faked in memory (the platform's own is tested in
tests/test_cli.py): what it does on 423, 409, a broken connection and a refusal."""

import httpx
import pytest

from vp import tus
from vp.api import Api, Target
from vp.errors import CliError, Rejected

URL = "http://vp.test/files/0123456789abcdef0123456789abcdef"


class FakeTus:
    """Stores PATCH bodies at their offset; `script` says what each PATCH meets first."""

    def __init__(self, size: int, script: list[str]) -> None:
        self.size, self.script, self.data = size, script, bytearray()
        self.received = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            headers = {"Upload-Offset": str(len(self.data)), "Upload-Length": str(self.size)}
            return httpx.Response(200 if self.script != ["gone"] else 404, headers=headers)
        action = self.script.pop(0) if self.script else "store"
        if action == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if action == "locked":
            return httpx.Response(423, json={"error": "upload_locked", "detail": "busy"})
        if action == "refuse":
            return httpx.Response(422, json={"error": "not_a_video", "detail": "not\na video"})
        body = request.read()
        self.received += len(body)
        if int(request.headers["upload-offset"]) != len(self.data):
            return httpx.Response(409, json={"error": "offset_mismatch", "detail": "moved"})
        if action == "cut":
            # The server keeps what arrived of a body cut off; the client sees a broken line.
            self.data += body[: len(body) // 2]
            raise httpx.RemoteProtocolError("connection cut", request=request)
        self.data += body
        return httpx.Response(204, headers={"Upload-Offset": str(len(self.data))})


def send(tmp_path, server: FakeTus, content: bytes, positions: list[int]) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(content)
    transfer = tus.Transfer(URL, len(content), len(server.data))
    with Api(Target("http://vp.test"), transport=httpx.MockTransport(server)) as api:
        tus.send(
            api,
            transfer,
            source,
            chunk_size=1000,
            throttle=tus.Throttle(None),
            report=positions.append,
            subject="clip.mp4",
        )


def test_the_rest_is_sent_from_the_offset_and_nothing_twice(tmp_path):
    content = bytes(range(256)) * 12
    server = FakeTus(len(content), [])
    server.data += content[:1234]
    positions: list[int] = []
    send(tmp_path, server, content, positions)
    assert bytes(server.data) == content
    assert server.received == len(content) - 1234
    assert positions[-1] == len(content) and positions == sorted(positions)


def test_a_locked_upload_and_a_cut_connection_are_retried_from_the_servers_offset(tmp_path):
    content = bytes(range(256)) * 12
    server = FakeTus(len(content), ["locked", "store", "cut"])
    send(tmp_path, server, content, [])
    assert bytes(server.data) == content


def test_a_refused_file_is_rejected_in_one_line(tmp_path):
    server = FakeTus(10, ["refuse"])
    with pytest.raises(Rejected) as refused:
        send(tmp_path, server, b"0123456789", [])
    assert refused.value.message == "the server refused clip.mp4: not a video"


def test_the_connection_lost_for_good_says_how_to_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(tus, "RETRY_DELAYS", (0.0,))
    server = FakeTus(3000, ["store", "down", "down"])
    with pytest.raises(CliError, match="run the same command again to resume"):
        send(tmp_path, server, b"x" * 3000, [])


def test_the_throttle_holds_the_average_rate():
    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = tus.Throttle(100, clock=lambda: now[0], sleep=sleep)
    throttle.spend(50)
    throttle.spend(50)
    assert slept == [0.5, 0.5]
    now[0] += 5  # idle: the next bytes are not held back
    throttle.spend(100)
    assert slept == [0.5, 0.5]
    unlimited = tus.Throttle(None, clock=lambda: 0.0, sleep=sleep)
    unlimited.spend(10**9)
    assert slept == [0.5, 0.5]


def test_metadata_is_base64_per_key():
    assert tus.metadata_header({"filename": "a b.mp4", "codec": "hevc"}) == (
        "filename YSBiLm1wNA==,codec aGV2Yw=="
    )
