"""No public field names a server path: job errors, event reasons, webhook payloads and error
details say what failed with file names only, while the service log keeps the whole text.

The platform runs with its storage in a folder whose name has spaces, and with an ffmpeg
wrapper (tests/test_events.py does the same): real ffmpeg, except that while the flag exists
every input it is given is renamed to one that is gone, so ffmpeg itself fails and names the
missing file by its absolute path in the storage folder.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Platform, upload, wait_status
from tests.test_events import Receiver

CHUNK = 1024 * 1024
SECRET = "public-errors-secret"

FFMPEG_WRAPPER = """#!/bin/sh
[ -e "{flag}" ] || exec ffmpeg "$@"
previous=
for arg do
  shift
  [ "$previous" = "-i" ] && arg="$arg.gone"
  set -- "$@" "$arg"
  previous=$arg
done
exec ffmpeg "$@"
"""


class Setup:
    """The platform, its webhook receiver and the flag that makes ffmpeg's inputs vanish."""

    def __init__(self, root: Path) -> None:
        self.storage = root / "a folder with spaces" / "storage"
        self.flag = root / "inputs-gone"
        wrapper = root / "ffmpeg"
        wrapper.write_text(FFMPEG_WRAPPER.format(flag=self.flag))
        wrapper.chmod(0o755)
        self.receiver = Receiver()
        self.platform = Platform(
            self.storage,
            FFMPEG_BIN=str(wrapper),
            WEBHOOK_URLS=self.receiver.url,
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_POLL_SECONDS="0.1",
            MAX_ATTEMPTS="2",
            RETRY_BACKOFF_SECONDS="0.2",
        )

    @property
    def on_s3(self) -> bool:
        return bool(self.platform.env.get("STORAGE_URL"))

    def leaks(self, text: str) -> list[str]:
        """The spellings of the storage folder (and its parent) found in `text`; on S3 also
        the bucket's private endpoint and any presigned URL's signing parameters."""
        spellings = {str(self.storage), str(self.storage.resolve()), str(self.storage.parent)}
        if self.on_s3:
            spellings |= {self.platform.env["AWS_ENDPOINT_URL"], "X-Amz-", "x-amz-"}
        return sorted(s for s in spellings if s in text)

    def log(self) -> str:
        return self.platform.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    made = Setup(tmp_path_factory.mktemp("public-errors"))
    try:
        made.platform.start()
        yield made
    finally:
        made.platform.drop()
        made.receiver.close()


@pytest.fixture(scope="module")
def client(setup: Setup) -> Iterator[httpx.Client]:
    with setup.platform.client() as http:
        yield http


def _public_views(client: httpx.Client, video_id: str) -> dict[str, str]:
    """Everything an API client or an operator can read about a video, as text."""
    views = {
        "video": client.get(f"/videos/{video_id}"),
        "transcode status": client.get(f"/transcode/status/{video_id}"),
        "admin status": client.get(f"/admin/videos/{video_id}/status"),
        "events": client.get(f"/admin/videos/{video_id}/events"),
        "admin videos": client.get("/admin/videos"),
    }
    for name, answer in views.items():
        assert answer.status_code == 200, (name, answer.text)
    return {name: answer.text for name, answer in views.items()}


def _webhook_bodies(setup: Setup, video_id: str, kind: str) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in setup.receiver.wait_for(video_id, kind)]


def test_a_failed_transcode_tells_why_without_the_storage_path(setup, client, clips):
    setup.flag.touch()
    try:
        video_id, done = upload(client, clips["tiny"], chunk_size=CHUNK)
        assert done is not None and done.status_code == 200, done.text
        assert wait_status(client, video_id)["overall"] == "failed"
    finally:
        setup.flag.unlink()
    error = client.get(f"/videos/{video_id}").json()["error"]
    # ffmpeg's own complaint is kept, naming the file by its base name: on the folder the
    # path it could not open; on S3 the presigned URL (".gone" then ends its signature, so
    # the bucket refuses it), which is a key to the original and must not be shown.
    name, why = ("source", "403 Forbidden") if setup.on_s3 else ("source.gone", "No such file")
    assert f"{name}: " in error and why in error, error
    for view, text in _public_views(client, video_id).items():
        assert not setup.leaks(text), (view, text)
    events = json.loads(_public_views(client, video_id)["events"])["events"]
    assert any(e["kind"] == "chunk.retry" and f"{name}: " in e["reason"] for e in events)
    (failed,) = _webhook_bodies(setup, video_id, "video.failed")
    assert f"{name}: " in failed["reason"] and f"{name}: " in failed["data"]["error"]
    assert not setup.leaks(json.dumps(failed)), failed
    # The operator's log keeps where it happened.
    if setup.on_s3:
        assert f"/originals/{video_id}/source?X-Amz-" in setup.log()
    else:
        assert f"{setup.storage}/originals/{video_id}/source.gone" in setup.log()


def test_a_derived_file_that_cannot_be_made_says_so_without_the_storage_path(setup, client, clips):
    video_id, _ = upload(client, clips["tiny"], chunk_size=CHUNK)
    assert wait_status(client, video_id)["overall"] == "ok"
    rung = client.get(f"/videos/{video_id}").json()["qualities"][-1]
    setup.flag.touch()
    try:
        answer = client.get(f"/stream/{video_id}/download/{rung}.mp4")
    finally:
        setup.flag.unlink()
    assert answer.status_code >= 400, answer.text
    assert answer.json()["detail"] and not setup.leaks(answer.text), answer.text
    # On S3 the download is cut from a copy of the rung in the storage folder's scratch.
    where = "tmp/[^/]+" if setup.on_s3 else f"hls/{video_id}"
    assert re.search(
        f"{re.escape(str(setup.storage))}/{where}/{rung}/playlist.m3u8.gone", setup.log()
    )


def test_a_refused_concat_list_naming_a_stored_file_does_not_echo_its_path(setup, client, tmp_path):
    target = setup.storage / "originals" / ("0" * 32) / "source"
    listing = tmp_path / "list.mp4"
    listing.write_text(f"ffconcat version 1.0\nfile '{target}'\n", encoding="utf-8")
    video_id, done = upload(client, listing, chunk_size=CHUNK)
    assert done is not None and done.status_code == 422, done.text
    assert done.json()["detail"] and not setup.leaks(done.text), done.text
    for name, text in _public_views(client, video_id).items():
        assert not setup.leaks(text), (name, text)
    (failed,) = _webhook_bodies(setup, video_id, "video.failed")
    assert not setup.leaks(json.dumps(failed)), failed
