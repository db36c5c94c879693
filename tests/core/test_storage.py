"""write_atomic: readers and power cuts see the old file or the whole new one.

A power cut cannot be staged in a test; what can be checked is that the calls which make the
kernel put bytes and names on the disk are made, on the right files, in the right order
(tests.disk.DiskCalls records them; they still run, on real files).
"""

from pathlib import Path
from unittest import mock

from services.core.storage import Storage, make_durable, write_atomic
from tests.disk import DiskCalls


def test_write_atomic_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path):
    target = tmp_path / "playlist.m3u8"
    target.write_text("old")
    with DiskCalls() as disk:
        write_atomic(target, "#EXTM3U\n")
    assert target.read_text() == "#EXTM3U\n"
    kinds = [kind for kind, _ in disk.calls]
    assert kinds == ["fsync", "replace", "fsync"], disk.calls
    temporary = disk.calls[0][1]
    assert Path(temporary).parent == tmp_path and temporary != str(target)
    assert disk.calls[1][1] == f"{temporary} -> {target}"
    assert disk.calls[2][1] == str(tmp_path)


def test_write_atomic_writes_bytes_too_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "init.mp4"
    write_atomic(target, b"\x00\x00\x00\x08free")
    assert target.read_bytes() == b"\x00\x00\x00\x08free"
    assert [p.name for p in tmp_path.iterdir()] == ["init.mp4"]


def test_a_failed_write_atomic_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "master.m3u8"
    target.write_text("old")
    with mock.patch("os.fsync", side_effect=OSError(5, "Input/output error")):
        try:
            write_atomic(target, "new")
        except OSError:
            pass
        else:
            raise AssertionError("the failed fsync must not be swallowed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["master.m3u8"]


def test_make_durable_syncs_every_file_then_every_folder_holding_one(tmp_path):
    (tmp_path / "720p").mkdir()
    files = [tmp_path / "720p" / f"seg_{n:05d}.ts" for n in range(3)] + [tmp_path / "a.m3u8"]
    for file in files:
        file.write_bytes(b"x")
    with DiskCalls() as disk:
        make_durable(files, folders=[tmp_path.parent])
    synced = [what for _, what in disk.calls]
    expected_folders = {str(tmp_path / "720p"), str(tmp_path), str(tmp_path.parent)}
    assert set(synced) == {str(f) for f in files} | expected_folders
    assert len(synced) == len(files) + len(expected_folders), "each once"
    # Files first, then the folders that name them: all of them are done when it returns.
    assert set(synced[: len(files)]) == {str(f) for f in files}


def test_a_new_source_and_the_folders_naming_it_are_synced(tmp_path):
    storage = Storage(tmp_path)
    storage.ensure_layout()
    video_id = "e" * 32
    with DiskCalls() as disk:
        source = storage.create_source(video_id)
    assert source.is_file() and source.stat().st_size == 0
    originals = tmp_path.resolve() / "originals"
    assert disk.synced() == {str(source), str(originals / video_id), str(originals)}
