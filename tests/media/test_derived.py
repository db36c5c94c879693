"""make_once: a derived file is made once however many ask at the same time, appears whole
or not at all, and is never made in a folder that is gone."""

import asyncio
from pathlib import Path

import pytest

from services.media.derived import NotMade, make_once


async def test_concurrent_callers_make_the_file_once(tmp_path: Path) -> None:
    target = tmp_path / "poster.jpg"
    builds = []

    async def build(out: Path) -> None:
        builds.append(out)
        await asyncio.sleep(0.2)  # long enough for every caller to be waiting on the lock
        assert not target.exists(), "readers must not see a half-made file"
        out.write_bytes(b"jpeg")

    made = await asyncio.gather(*(make_once(target, build) for _ in range(5)))
    assert made == [target] * 5
    assert len(builds) == 1
    assert target.read_bytes() == b"jpeg"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".poster.jpg.lock", "poster.jpg"]


async def test_a_build_that_writes_nothing_leaves_nothing(tmp_path: Path) -> None:
    async def build(out: Path) -> None:
        out.write_bytes(b"")

    with pytest.raises(NotMade, match=r"wrote no poster\.jpg"):
        await make_once(tmp_path / "poster.jpg", build)
    assert [p.name for p in tmp_path.iterdir()] == [".poster.jpg.lock"]


async def test_a_failed_build_leaves_no_temporary_file(tmp_path: Path) -> None:
    async def build(out: Path) -> None:
        out.write_bytes(b"half")
        raise NotMade("ffmpeg exited with code 1")

    with pytest.raises(NotMade, match="code 1"):
        await make_once(tmp_path / "720p.mp4", build)
    assert [p.name for p in tmp_path.iterdir()] == [".720p.mp4.lock"]


async def test_nothing_is_made_in_a_folder_that_is_gone(tmp_path: Path) -> None:
    async def build(out: Path) -> None:
        raise AssertionError("never built")

    gone = tmp_path / "hls" / "deleted-video"
    with pytest.raises(NotMade, match="folder is gone"):
        await make_once(gone / "poster.jpg", build)
    assert not gone.exists()
