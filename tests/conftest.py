from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.clips import make_clip
from tests.harness import Platform, upload, wait_status
from tests.s3server import S3Server, on_ci, start_s3_server


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test clip, rendered once per test run."""
    folder = tmp_path_factory.mktemp("clips")
    made = {
        "full": make_clip(folder / "full.mp4", width=1920, height=1080, seconds=4),
        "portrait": make_clip(folder / "portrait.mp4", width=720, height=1280, seconds=3),
        "small": make_clip(folder / "small.mp4", width=640, height=360, seconds=3),
        "silent": make_clip(folder / "silent.mp4", width=1280, height=720, seconds=3, audio=False),
        "pal": make_clip(folder / "pal.mp4", width=1280, height=720, seconds=4, fps=25),
        "tiny": make_clip(folder / "tiny.mp4", width=320, height=240, seconds=2),
        # Long enough to catch a job running (stop, resume, delete mid-encode).
        "long": make_clip(folder / "long.mp4", width=1920, height=1080, seconds=20),
    }
    text = folder / "text" / "clip.mp4"
    text.parent.mkdir()
    text.write_text("this is not a video\n" * 20, encoding="utf-8")
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(made["full"].read_bytes()[:3000])
    return {**made, "text": text, "truncated": truncated}


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The whole platform started by the launcher, on free ports, with its own storage."""
    running = Platform(tmp_path_factory.mktemp("platform") / "storage").start()
    yield running
    running.drop()


@pytest.fixture(scope="session")
def client(platform: Platform) -> Iterator[httpx.Client]:
    """An HTTP client talking to the platform's gateway."""
    with platform.client() as http:
        yield http


@pytest.fixture
def own_platform(tmp_path: Path) -> Iterator[Platform]:
    """A platform of the test's own, so killing parts of it disturbs no other test."""
    running = Platform(tmp_path / "storage").start()
    yield running
    running.drop()


TRANSCODED = ("full", "portrait", "small", "silent", "pal", "tiny")


@pytest.fixture(scope="session")
def transcoded(client: httpx.Client, clips: dict[str, Path]) -> dict[str, str]:
    """The ladder clips uploaded through the gateway and transcoded to `ok`: clip -> video id."""
    ids = {}
    for name in TRANSCODED:
        video_id, done = upload(client, clips[name], chunk_size=256 * 1024)
        assert done is not None and done.status_code == 200, done.text
        ids[name] = video_id
    for name, video_id in ids.items():
        status = wait_status(client, video_id)
        assert status["overall"] == "ok", (name, status)
    return ids


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server of the test run's own (tests/s3server.py); skipped only off CI,
    and only when weed cannot start here."""
    try:
        server = start_s3_server(tmp_path_factory.mktemp("s3"))
    except RuntimeError as exc:
        if on_ci():
            raise
        pytest.skip(f"no S3 server: {exc}")
    yield server
    server.stop()
