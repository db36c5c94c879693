"""Every backend through the storage interface: the same tests on the local folder and on a real
S3 server (SeaweedFS, tests/s3server.py), each S3 test under a fresh prefix of the bucket."""

import errno
import os
import uuid
from pathlib import Path

import httpx
import pytest

from services.core.settings import Settings
from services.core.storage.factory import open_store, parse_storage_url
from services.core.storage.interface import (
    MAX_PARTS,
    MIN_PART_BYTES,
    ObjectMissing,
    Part,
    StorageUnavailable,
    Store,
)
from services.core.storage.keys import InvalidKey
from services.core.storage.local import LocalStore
from services.core.storage.parts import PartRejected
from services.core.storage.s3 import S3Limits, S3Store
from tests.harness import free_ports
from tests.s3server import S3Server

# Small parts for put_file on S3, so a test file of a few MiB already goes in parts.
SMALL_PARTS = S3Limits(multipart_threshold=MIN_PART_BYTES, part_bytes=MIN_PART_BYTES)


def s3_store(server: S3Server, **options: object) -> S3Store:
    """A store on the test server under a prefix no other test uses."""
    return S3Store(
        server.bucket,
        f"tests/{uuid.uuid4().hex}",
        endpoint_url=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each backend in turn."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return s3_store(request.getfixturevalue("s3_server"), limits=SMALL_PARTS)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def pending_uploads(store: Store, server: S3Server | None) -> list[str]:
    """The backend's unfinished multipart uploads of this store."""
    if isinstance(store, LocalStore):
        folder = store.root / ".multipart"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert isinstance(store, S3Store) and server is not None
    answer = server.client().list_multipart_uploads(Bucket=server.bucket, Prefix=store.prefix)
    return [u["UploadId"] for u in answer.get("Uploads", [])]


# --- whole objects ----------------------------------------------------------------------------
def test_put_bytes_then_get_bytes_gives_them_back(store: Store) -> None:
    info = store.put_bytes("hls/v1/master.m3u8", b"#EXTM3U\n", content_type="application/x-mpegurl")
    assert (info.key, info.size) == ("hls/v1/master.m3u8", 8)
    assert store.get_bytes("hls/v1/master.m3u8", limit=8) == b"#EXTM3U\n"


def test_put_bytes_replaces_the_object_and_its_etag(store: Store) -> None:
    first = store.put_bytes("hls/v1/playlist.m3u8", b"one")
    second = store.put_bytes("hls/v1/playlist.m3u8", b"three")
    assert store.get_bytes("hls/v1/playlist.m3u8", limit=100) == b"three"
    assert first.etag != second.etag
    found = store.stat("hls/v1/playlist.m3u8")
    assert found is not None and (found.size, found.etag) == (5, second.etag)


def test_get_bytes_over_the_limit_is_refused(store: Store) -> None:
    store.put_bytes("hls/v1/big.m3u8", b"x" * 100)
    with pytest.raises(ValueError, match="larger than 99 bytes"):
        store.get_bytes("hls/v1/big.m3u8", limit=99)


def test_get_bytes_of_a_missing_object_is_object_missing(store: Store) -> None:
    with pytest.raises(ObjectMissing):
        store.get_bytes("hls/v1/none.m3u8", limit=10)


def test_put_file_stores_the_file_and_consumes_it_on_the_local_folder(
    store: Store, tmp_path: Path
) -> None:
    source = write(tmp_path / "segment.ts", os.urandom(4096))
    expected = source.read_bytes()
    info = store.put_file("hls/v1/720p/seg_00000.ts", source, content_type="video/mp2t")
    assert info.size == 4096
    assert b"".join(store.read_range("hls/v1/720p/seg_00000.ts")) == expected
    # The local folder renames it into place; S3 uploads it and the caller deletes it.
    assert source.exists() == (store.name == "s3")


def test_put_file_of_a_large_file_goes_in_parts(store: Store, tmp_path: Path) -> None:
    data = os.urandom(2 * MIN_PART_BYTES + 12345)
    source = write(tmp_path / "source", data)
    info = store.put_file("originals/v1/source", source)
    assert info.size == len(data)
    assert b"".join(store.read_range("originals/v1/source")) == data


def test_put_file_from_another_disk_is_copied_in(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    source = write(tmp_path / "chunk", b"bytes from elsewhere")
    real_replace = os.replace

    def across_disks(src: object, dst: object) -> None:
        if Path(str(src)) == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", across_disks)
        store.put_file("originals/v1/source", source)
    assert store.get_bytes("originals/v1/source", limit=100) == b"bytes from elsewhere"
    assert not source.exists()
    assert sorted(p.name for p in (tmp_path / "store/originals/v1").iterdir()) == ["source"]


# --- ranges -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, None, b"0123456789"),
        (3, 7, b"3456"),
        (5, None, b"56789"),
        (8, 100, b"89"),
        (4, 4, b""),
        (10, None, b""),
        (12, None, b""),
    ],
)
def test_read_range_gives_the_bytes_from_start_to_end(
    store: Store, start: int, end: int | None, expected: bytes
) -> None:
    store.put_bytes("hls/v1/720p/seg_00001.ts", b"0123456789")
    assert b"".join(store.read_range("hls/v1/720p/seg_00001.ts", start, end)) == expected


def test_read_range_streams_in_pieces_of_at_most_a_mebibyte(store: Store) -> None:
    data = os.urandom(2 * 1024 * 1024 + 77)
    store.put_bytes("hls/v1/720p/seg_00002.ts", data)
    pieces = list(store.read_range("hls/v1/720p/seg_00002.ts", 1))
    assert len(pieces) >= 3 and max(len(p) for p in pieces) <= 1024 * 1024
    assert b"".join(pieces) == data[1:]


def test_read_range_of_a_missing_object_is_object_missing_at_once(store: Store) -> None:
    for start, end in ((0, None), (0, 0)):
        with pytest.raises(ObjectMissing):
            store.read_range("hls/v1/720p/seg_09999.ts", start, end)


def test_a_backwards_range_is_refused(store: Store) -> None:
    store.put_bytes("hls/v1/a", b"abc")
    with pytest.raises(ValueError):
        store.read_range("hls/v1/a", 2, 1)


# --- stat, list, delete -----------------------------------------------------------------------
def test_stat_of_a_missing_object_is_none(store: Store) -> None:
    assert store.stat("hls/v1/nothing") is None
    store.put_bytes("hls/v1/folder/file", b"x")
    assert store.stat("hls/v1/folder") is None


def test_list_prefix_lists_in_key_order_and_only_below_the_prefix(store: Store) -> None:
    for key in ("v/b", "v/a/2", "v/a/1", "v/a.x", "vv/z", "w/q", "v.txt"):
        store.put_bytes(key, key.encode())
    listed = list(store.list_prefix("v/"))
    assert [i.key for i in listed] == ["v/a.x", "v/a/1", "v/a/2", "v/b"]
    assert [i.size for i in listed] == [5, 5, 5, 3]
    assert [i.key for i in store.list_prefix("v/a/")] == ["v/a/1", "v/a/2"]
    assert list(store.list_prefix("nothing/")) == []


def test_delete_removes_one_object_and_a_missing_one_is_fine(store: Store) -> None:
    store.put_bytes("hls/v1/poster.jpg", b"jpeg")
    store.delete("hls/v1/poster.jpg")
    assert store.stat("hls/v1/poster.jpg") is None
    store.delete("hls/v1/poster.jpg")
    store.delete("hls/v2/never.jpg")


def test_delete_prefix_removes_everything_below_it_and_counts(store: Store) -> None:
    for key in ("hls/v1/master.m3u8", "hls/v1/720p/playlist.m3u8", "hls/v1/720p/seg_00000.ts"):
        store.put_bytes(key, b"x")
    store.put_bytes("hls/v10/master.m3u8", b"other video")
    assert store.delete_prefix("hls/v1/") == 3
    assert list(store.list_prefix("hls/v1/")) == []
    assert [i.key for i in store.list_prefix("hls/")] == ["hls/v10/master.m3u8"]
    assert store.delete_prefix("hls/v1/") == 0


def test_delete_prefix_goes_in_batches_beyond_a_thousand_keys(s3_server: S3Server) -> None:
    store = s3_store(s3_server)
    names = [f"{store.prefix}many/{i:05d}" for i in range(1003)]
    client = s3_server.client()
    for name in names:
        client.put_object(Bucket=s3_server.bucket, Key=name, Body=b"")
    assert store.delete_prefix("many/") == 1003
    assert list(store.list_prefix("many/")) == []


# --- multipart --------------------------------------------------------------------------------
def test_parts_sent_out_of_order_are_joined_in_number_order(store: Store, tmp_path: Path) -> None:
    first, last = os.urandom(MIN_PART_BYTES), b"the end"
    upload = store.start_multipart("originals/v1/source", content_type="video/mp4")
    part2 = store.put_part("originals/v1/source", upload, 2, write(tmp_path / "2", last))
    part1 = store.put_part("originals/v1/source", upload, 1, write(tmp_path / "1", first))
    assert (part1.number, part1.size, part2.size) == (1, MIN_PART_BYTES, len(last))
    info = store.finish_multipart("originals/v1/source", upload, [part2, part1])
    assert info.size == MIN_PART_BYTES + len(last)
    assert b"".join(store.read_range("originals/v1/source")) == first + last
    assert (
        b"".join(store.read_range("originals/v1/source", MIN_PART_BYTES - 2)) == first[-2:] + last
    )


def test_a_resent_part_replaces_the_earlier_one(store: Store, tmp_path: Path) -> None:
    upload = store.start_multipart("originals/v1/source")
    store.put_part("originals/v1/source", upload, 1, write(tmp_path / "a", b"first try"))
    again = store.put_part("originals/v1/source", upload, 1, write(tmp_path / "b", b"second"))
    store.finish_multipart("originals/v1/source", upload, [again])
    assert store.get_bytes("originals/v1/source", limit=100) == b"second"


def test_a_part_below_the_minimum_is_refused_before_the_server_is_asked(
    store: Store, tmp_path: Path
) -> None:
    upload = store.start_multipart("originals/v1/source")
    parts = [
        store.put_part("originals/v1/source", upload, n, write(tmp_path / str(n), b"small"))
        for n in (1, 2)
    ]
    with pytest.raises(PartRejected, match=f"at least {MIN_PART_BYTES}"):
        store.finish_multipart("originals/v1/source", upload, parts)
    # A small last part is allowed: the same upload finishes with part 1 alone.
    store.finish_multipart("originals/v1/source", upload, parts[:1])
    assert store.get_bytes("originals/v1/source", limit=10) == b"small"


def test_a_part_with_another_etag_is_refused(store: Store, tmp_path: Path) -> None:
    upload = store.start_multipart("originals/v1/source")
    part = store.put_part("originals/v1/source", upload, 1, write(tmp_path / "p", b"bytes"))
    forged = Part(number=1, etag="0" * 32, size=part.size)
    with pytest.raises(PartRejected):
        store.finish_multipart("originals/v1/source", upload, [forged])
    assert part.etag == "4b3a6218bb3e3a7303e8a171a60fcf92"  # md5(b"bytes"), as S3 says


@pytest.mark.parametrize("number", [0, MAX_PARTS + 1])
def test_a_part_number_outside_s3s_range_is_refused(
    store: Store, tmp_path: Path, number: int
) -> None:
    upload = store.start_multipart("originals/v1/source")
    with pytest.raises(PartRejected, match="outside"):
        store.put_part("originals/v1/source", upload, number, write(tmp_path / "p", b"x"))


def test_abort_removes_the_parts(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("s3_server") if store.name == "s3" else None
    upload = store.start_multipart("originals/v1/source")
    part = store.put_part("originals/v1/source", upload, 1, write(tmp_path / "p", b"bytes"))
    assert pending_uploads(store, server) == [upload]
    store.abort_multipart("originals/v1/source", upload)
    assert pending_uploads(store, server) == []
    with pytest.raises(ObjectMissing):
        store.finish_multipart("originals/v1/source", upload, [part])
    assert store.stat("originals/v1/source") is None


def test_abort_of_an_unknown_upload_is_not_an_error(store: Store) -> None:
    store.abort_multipart("originals/v1/source", "0" * 32)
    store.abort_multipart("originals/v1/source", "not-an-upload")


def test_a_part_for_an_unknown_upload_is_object_missing(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ObjectMissing):
        store.put_part("originals/v1/source", "f" * 32, 1, write(tmp_path / "p", b"x"))


# --- URLs -------------------------------------------------------------------------------------
def test_reader_url_serves_the_object_with_ranges_on_s3(store: Store) -> None:
    key = "hls/v1/720p/seg_00003.ts"
    store.put_bytes(key, b"0123456789")
    url = store.reader_url(key, expires_seconds=60)
    if isinstance(store, LocalStore):
        assert url is None and store.local_path(key) == store.root / key
        return
    assert url is not None and store.local_path(key) is None
    assert httpx.get(url).content == b"0123456789"
    ranged = httpx.get(url, headers={"Range": "bytes=2-5"})
    assert (ranged.status_code, ranged.content) == (206, b"2345")


def test_public_url_follows_the_public_base(tmp_path: Path) -> None:
    base = "https://cdn.example/media/"
    local = LocalStore(tmp_path, public_base=base)
    assert local.public_url("hls/v1/a b.ts") == "https://cdn.example/media/hls/v1/a%20b.ts"
    remote = S3Store("bucket", "pre/fix", endpoint_url="http://127.0.0.1:9", public_base=base)
    assert remote.public_url("hls/v1/a.ts") == "https://cdn.example/media/pre/fix/hls/v1/a.ts"
    assert LocalStore(tmp_path).public_url("hls/v1/a.ts") is None


# --- failures ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key", ["../x", "/abs", "a/\x00b", "a/../b", "a//b", "a\\b", "", "a/", "./a", "a/\nb"]
)
def test_a_key_that_is_not_relative_and_clean_is_refused(store: Store, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidKey):
        store.get_bytes(key, limit=1)
    with pytest.raises(InvalidKey):
        store.stat(key)


def test_a_prefix_must_end_with_a_slash(store: Store) -> None:
    for prefix in ("hls/v1", "", "/hls/", "../"):
        with pytest.raises(InvalidKey):
            store.list_prefix(prefix)
        with pytest.raises(InvalidKey):
            store.delete_prefix(prefix)


def test_a_symbolic_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "out").symlink_to(tmp_path)
    with pytest.raises(InvalidKey):
        store.put_bytes("out/escaped", b"x")


def test_an_s3_endpoint_that_is_down_is_storage_unavailable_without_credentials() -> None:
    (port,) = free_ports(1)
    store = S3Store(
        "media",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key="AKIDSHOULDNOTSHOW",
        secret_key="secret-should-not-show",
        limits=S3Limits(connect_timeout=2, max_attempts=1, check_timeout=2),
    )
    calls = [
        lambda: store.get_bytes("hls/v1/master.m3u8", limit=10),
        lambda: store.put_bytes("hls/v1/master.m3u8", b"x"),
        lambda: store.stat("hls/v1/master.m3u8"),
        lambda: list(store.list_prefix("hls/")),
        lambda: store.start_multipart("originals/v1/source"),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable) as caught:
            call()
        assert f"127.0.0.1:{port}" in caught.value.detail
        assert "SHOULDNOTSHOW" not in caught.value.detail.upper()
    problem = store.check()
    assert problem is not None and f"127.0.0.1:{port}" in problem and "SHOULD" not in problem


def test_wrong_credentials_are_storage_unavailable(s3_server: S3Server) -> None:
    store = S3Store(
        s3_server.bucket,
        endpoint_url=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
        limits=S3Limits(max_attempts=1),
    )
    with pytest.raises(StorageUnavailable, match="refused"):
        store.put_bytes("hls/v1/master.m3u8", b"x")
    assert store.check() is not None


def test_check_is_none_when_the_backend_answers(store: Store) -> None:
    if isinstance(store, LocalStore):
        store.root.mkdir(parents=True)
    assert store.check() is None


def test_check_names_a_missing_bucket(s3_server: S3Server) -> None:
    store = S3Store(
        "no-such-bucket",
        endpoint_url=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    problem = store.check()
    assert problem is not None and "no-such-bucket" in problem


# --- configuration ----------------------------------------------------------------------------
def test_an_empty_storage_url_is_the_local_folder(tmp_path: Path) -> None:
    store = open_store(Settings(storage_dir=tmp_path, storage_url=""))
    assert isinstance(store, LocalStore) and store.root == tmp_path.resolve()


def test_an_s3_url_and_the_standard_aws_variables_make_an_s3_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_URL", "s3://my-bucket/videos/site1/")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("MEDIA_PUBLIC_URL", "https://cdn.example/")
    store = open_store(Settings(storage_dir=tmp_path))
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint) == (
        "my-bucket",
        "videos/site1/",
        "http://127.0.0.1:9000",
    )
    assert store.public_url("a") == "https://cdn.example/videos/site1/a"


@pytest.mark.parametrize(
    ("url", "expected"),
    [("s3://bucket", ("bucket", "")), ("s3://my.bucket-1/a/b/", ("my.bucket-1", "a/b"))],
)
def test_storage_urls_that_parse(url: str, expected: tuple[str, str]) -> None:
    assert parse_storage_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://bucket/x",
        "/srv/media",
        "s3://",
        "s3:///prefix",
        "s3://Bad_Bucket",
        "s3://ab",
        "s3://a..b",
        "s3://192.168.1.1",
        "s3://key:secret@bucket",
        "s3://bucket:9000",
        "s3://bucket/a/../b",
        "s3://bucket/a//b",
        "s3://bucket?region=x",
    ],
)
def test_a_bad_storage_url_says_what_is_wrong(url: str) -> None:
    with pytest.raises(ValueError, match="STORAGE_URL"):
        parse_storage_url(url)


def test_a_bad_media_public_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MEDIA_PUBLIC_URL"):
        open_store(Settings(storage_dir=tmp_path, media_public_url="cdn.example"))
