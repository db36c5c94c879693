"""What a chunk is known by (services/upload/digests.py), through the real platform: a cheap
digest compares resends; a sha256 the client sends with a chunk (Content-Digest on a raw
body, a `sha256` form field) is checked before the chunk counts; rows kept as sha256 from
before the change still compare resends."""

import base64
import hashlib

import httpx
import pytest
import xxhash
from sqlalchemy import update

from services.core.models import UploadChunk
from services.upload import digests
from services.upload.digests import content_digest_sha256
from tests.harness import Platform, send_chunk, sha256_of

CHUNK = 16 * 1024


def _init(client: httpx.Client, data: bytes) -> str:
    response = client.post(
        "/upload/init",
        data={
            "filename": "a.mp4",
            "total_chunks": -(-len(data) // CHUNK),
            "total_size": len(data),
            "chunk_size": CHUNK,
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["upload_id"])


def _header(piece: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(piece).digest()).decode()}:"


def _send(
    client: httpx.Client, upload_id: str, index: int, piece: bytes, raw: bool, sha256: str | None
) -> httpx.Response:
    return send_chunk(client, upload_id, index, piece, raw=raw, sha256=sha256)


def _raw(client: httpx.Client, upload_id: str, piece: bytes, content_digest: str) -> httpx.Response:
    """Chunk 0 as a raw body with this Content-Digest header."""
    return client.post(
        "/upload/chunk",
        params={"upload_id": upload_id, "index": 0},
        content=piece,
        headers={"Content-Type": "application/octet-stream", "Content-Digest": content_digest},
    )


def _pieces(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _missing(client: httpx.Client, upload_id: str) -> list[int]:
    return list(client.get(f"/upload/{upload_id}").json()["missing"])


@pytest.mark.parametrize("raw", [False, True], ids=["form", "raw"])
def test_a_chunk_that_does_not_match_the_sha256_sent_with_it_is_refused_and_not_counted(
    platform, client, clips, raw
):
    data = clips["small"].read_bytes()
    pieces = _pieces(data)
    upload_id = _init(client, data)
    wrong = hashlib.sha256(b"not these bytes").hexdigest()

    refused = _send(client, upload_id, 0, pieces[0], raw, wrong)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "chunk_checksum_mismatch"
    assert "send it again" in refused.json()["detail"]
    assert 0 in _missing(client, upload_id), "a chunk that failed its check does not count"

    for index, piece in enumerate(pieces):
        sent = _send(client, upload_id, index, piece, raw, hashlib.sha256(piece).hexdigest())
        assert sent.status_code == 200, sent.text
        assert sent.json()["sha256"] == hashlib.sha256(piece).hexdigest()
        assert sent.json()["duplicate"] is False
    done = client.post("/upload/complete", data={"upload_id": upload_id})
    assert done.status_code == 200, done.text
    assert done.json()["video"]["sha256"] == sha256_of(clips["small"])
    assert platform.stored(f"originals/{upload_id}/source") == data


@pytest.mark.parametrize("raw", [False, True], ids=["form", "raw"])
def test_a_resend_is_compared_with_the_first_copy_and_checked_against_its_own_sha256(
    client, clips, raw
):
    data = clips["small"].read_bytes()
    piece = _pieces(data)[1]
    upload_id = _init(client, data)
    first = _send(client, upload_id, 1, piece, raw, None)
    assert first.status_code == 200, first.text
    assert first.json()["sha256"] is None, "no sha256 asked for, none computed"

    same = _send(client, upload_id, 1, piece, raw, None)
    assert (same.status_code, same.json()["duplicate"]) == (200, True)
    checked = _send(client, upload_id, 1, piece, raw, hashlib.sha256(piece).hexdigest())
    assert checked.status_code == 200, checked.text
    assert checked.json() | {"upload_id": ""} == {
        "upload_id": "",
        "index": 1,
        "size": len(piece),
        "sha256": hashlib.sha256(piece).hexdigest(),
        "duplicate": True,
    }
    corrupted = _send(client, upload_id, 1, piece, raw, hashlib.sha256(b"x").hexdigest())
    assert corrupted.status_code == 400
    assert corrupted.json()["error"] == "chunk_checksum_mismatch"

    other = bytes(reversed(piece))
    changed = _send(client, upload_id, 1, other, raw, hashlib.sha256(other).hexdigest())
    assert changed.status_code == 409
    assert changed.json()["error"] == "chunk_mismatch"
    assert "first copy is kept" in changed.json()["detail"]


def _set_digest(platform: Platform, upload_id: str, index: int, digest: str) -> None:
    """Rewrite a chunk row's digest, in the platform's own database."""
    platform.execute(
        update(UploadChunk)
        .where(UploadChunk.upload_id == upload_id, UploadChunk.index == index)
        .values(digest=digest)
    )


def test_a_row_kept_as_sha256_before_the_change_still_compares_resends(platform, client, clips):
    data = clips["small"].read_bytes()
    piece = _pieces(data)[0]
    upload_id = _init(client, data)
    assert _send(client, upload_id, 0, piece, True, None).status_code == 200
    # What the 0009 migration leaves of a row written before it.
    _set_digest(platform, upload_id, 0, f"sha256:{hashlib.sha256(piece).hexdigest()}")

    again = _send(client, upload_id, 0, piece, True, None)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    other = bytes(reversed(piece))
    assert _send(client, upload_id, 0, other, True, None).status_code == 409


def test_a_chunk_row_keeps_the_xxh3_of_its_bytes(platform, client, clips):
    """The digest is the bytes' own: a row rewritten to another value makes the same bytes a
    mismatch, so a resend really is compared, not waved through."""
    data = clips["small"].read_bytes()
    piece = _pieces(data)[2]
    upload_id = _init(client, data)
    assert _send(client, upload_id, 2, piece, False, None).status_code == 200
    _set_digest(platform, upload_id, 2, f"xxh3-128:{xxhash.xxh3_128(piece).hexdigest()}")
    assert _send(client, upload_id, 2, piece, False, None).json()["duplicate"] is True
    _set_digest(platform, upload_id, 2, f"xxh3-128:{xxhash.xxh3_128(b'y').hexdigest()}")
    assert _send(client, upload_id, 2, piece, False, None).status_code == 409


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("sha-256=abc", "sha-256=:BASE64:"),
        ("sha-256=:not base64!:", "sha-256=:BASE64:"),
        ("sha-256=:AAAA:", "32 bytes"),
        ("sha-512=:" + base64.b64encode(b"z" * 64).decode() + ":", "sha-256 only"),
        ("", "sha-256=:BASE64:"),
    ],
)
def test_a_content_digest_that_cannot_be_checked_is_a_400_saying_what_to_send(
    client, clips, header, says
):
    data = clips["small"].read_bytes()
    upload_id = _init(client, data)
    response = _raw(client, upload_id, _pieces(data)[0], header)
    assert response.status_code == 400, response.text
    assert says in response.json()["detail"]
    assert 0 in _missing(client, upload_id)


def test_an_oversized_content_digest_or_a_malformed_form_sha256_is_refused(client, clips):
    data = clips["small"].read_bytes()
    upload_id = _init(client, data)
    huge = _raw(client, upload_id, _pieces(data)[0], "a" * 5000)
    assert 400 <= huge.status_code < 500 and "Content-Digest" in huge.text
    bad = _send(client, upload_id, 0, _pieces(data)[0], False, "xyz")
    assert bad.status_code == 400
    assert "64 hex characters" in bad.json()["detail"]
    assert _missing(client, upload_id)[0] == 0


def test_content_digest_parsing_follows_rfc_9530():
    digest = hashlib.sha256(b"abc")
    b64 = base64.b64encode(digest.digest()).decode()
    assert content_digest_sha256(None) is None
    assert content_digest_sha256(f"sha-256=:{b64}:") == digest.hexdigest()
    # Several algorithms: the sha-256 among them is the one checked.
    other = base64.b64encode(b"q" * 64).decode()
    assert content_digest_sha256(f"sha-512=:{other}:, sha-256=:{b64}:") == digest.hexdigest()
    assert digests.algorithm_of("xxh3-128:00") == "xxh3-128"
    assert digests.algorithm_of("sha256:00") == "sha256"
    assert digests.algorithm_of("0" * 64) == "sha256"  # a bare hex, as before the prefix
