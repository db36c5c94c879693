"""The S3-compatible backend (AWS S3, MinIO, SeaweedFS, Ceph RGW, R2, ...) on boto3.

boto3 rather than obstore, measured (scripts/bench_s3_client.py): obstore is faster per small
request, but it has no multipart calls with an upload id of ours (create, part, complete,
abort), which uploads kept across requests and processes need.

Every boto3 call goes through `_calls`, the one place where its errors become the interface's:
a missing key is ObjectMissing; no connection, a timeout, a 5xx, throttling or refused
credentials are StorageUnavailable (the message names the endpoint and the bucket, never a
credential); a full backend is InsufficientStorage.
"""

import functools
import hashlib
import os
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from services.core.errors import AppError, InsufficientStorage
from services.core.storage.interface import (
    MAX_PARTS,
    MIN_PART_BYTES,
    ObjectInfo,
    ObjectMissing,
    Part,
    StorageUnavailable,
)
from services.core.storage.keys import check_key, check_prefix
from services.core.storage.local import PIECE_BYTES, check_range
from services.core.storage.parts import (
    PartRejected,
    bare_etag,
    check_part_number,
    check_parts,
    content_md5,
    file_md5,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MISSING_CODES = ("NoSuchKey", "NotFound", "404", "NoSuchUpload")
PART_CODES = ("InvalidPart", "InvalidPartOrder", "EntityTooSmall")
FULL_CODES = ("XMinioStorageFull", "StorageFull", "QuotaExceeded")
REFUSED_CODES = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket")
# What S3 stores when a PUT names no type.
DEFAULT_TYPE = "binary/octet-stream"
# S3 deletes at most this many keys per DeleteObjects request.
DELETE_BATCH = 1000


_SESSION_LOCK = threading.Lock()


@dataclass(frozen=True)
class S3Limits:
    """How long and how often the client tries before a call fails (every bound finite, so a
    backend that is down makes a request fail in seconds, not hang a worker)."""

    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 3
    # put_file sends a file larger than this in parts of part_bytes (within S3's rules).
    multipart_threshold: int = 64 * 1024 * 1024
    part_bytes: int = 16 * 1024 * 1024
    check_timeout: float = 3.0
    max_pool_connections: int = 16


class S3Store:
    """Objects in `bucket` under `prefix`; `public_base`, when given, is the URL the bucket's
    objects are served at (a CDN or a public bucket: the object's name, prefix included,
    follows it)."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        public_base: str | None = None,
        limits: S3Limits | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.public_base = public_base.rstrip("/") if public_base else None
        self.limits = limits or S3Limits()
        if not MIN_PART_BYTES <= self.limits.part_bytes <= self.limits.multipart_threshold:
            raise ValueError("part_bytes must be at least MIN_PART_BYTES and the threshold")
        self.endpoint = _without_userinfo(endpoint_url) if endpoint_url else "AWS S3"
        self._where = f"S3 storage {self.endpoint} (bucket {bucket})"
        credentials = {
            "endpoint_url": endpoint_url or None,
            "aws_access_key_id": access_key or None,
            "aws_secret_access_key": secret_key or None,
            "region_name": region,
        }
        self._credentials = credentials
        self._client = _client(
            credentials, self.limits, self.limits.read_timeout, self.limits.max_attempts
        )

    # --- whole objects --------------------------------------------------------------------
    def put_file(self, key: str, source: Path, *, content_type: str | None = None) -> ObjectInfo:
        """Upload `source` (in parts above the multipart threshold); the caller deletes it."""
        name = self._name(key)
        size = Path(source).stat().st_size
        if size > self.limits.multipart_threshold:
            return self._put_in_parts(key, Path(source), size, content_type)
        digest = file_md5(Path(source))
        with self._calls(key), open(source, "rb") as body:
            answer = self._client.put_object(
                Bucket=self.bucket,
                Key=name,
                Body=body,
                ContentLength=size,
                ContentMD5=content_md5(digest),
                ContentType=content_type or DEFAULT_TYPE,
            )
        return ObjectInfo(key, size, bare_etag(answer["ETag"]), time.time())

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """One PUT (atomic on S3), with Content-MD5 so the server checks the bytes (their ETag
        is not checked: with SSE-KMS it is no md5)."""
        name = self._name(key)
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        with self._calls(key):
            answer = self._client.put_object(
                Bucket=self.bucket,
                Key=name,
                Body=data,
                ContentMD5=content_md5(digest),
                ContentType=content_type or DEFAULT_TYPE,
            )
        return ObjectInfo(key, len(data), bare_etag(answer["ETag"]), time.time())

    def get_bytes(self, key: str, *, limit: int) -> bytes:
        """The whole object; ValueError when it holds more than `limit` bytes."""
        name = self._name(key)
        with self._calls(key):
            answer = self._client.get_object(Bucket=self.bucket, Key=name)
            body = answer["Body"]
            try:
                if answer["ContentLength"] > limit:
                    raise ValueError(f"object {key!r} is larger than {limit} bytes")
                return body.read()
            finally:
                body.close()

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """A ranged GET, streamed in pieces; ObjectMissing at once if there is no object."""
        check_range(start, end)
        name = self._name(key)
        if end == start:
            if self.stat(key) is None:
                raise ObjectMissing(f"no object {key!r}")
            return iter(())
        wanted = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        with self._calls(key):
            try:
                answer = self._client.get_object(Bucket=self.bucket, Key=name, Range=wanted)
            except ClientError as exc:
                # Past the end: S3 says 416 where the interface yields nothing.
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return iter(())
                raise
        return self._pieces(key, answer["Body"])

    def stat(self, key: str) -> ObjectInfo | None:
        """HEAD: size, ETag, Last-Modified; None when there is no object."""
        name = self._name(key)
        try:
            with self._calls(key):
                answer = self._client.head_object(Bucket=self.bucket, Key=name)
        except ObjectMissing:
            return None
        modified = answer["LastModified"].timestamp()
        return ObjectInfo(key, answer["ContentLength"], bare_etag(answer["ETag"]), modified)

    def list_prefix(self, prefix: str) -> Iterator[ObjectInfo]:
        """ListObjectsV2 pages, the store's prefix taken off, sorted here: AWS lists in key
        order, but SeaweedFS (and other servers built on a file tree) folder by folder."""
        check_prefix(prefix)
        return iter(sorted(self._listing(prefix), key=lambda info: info.key))

    def delete(self, key: str) -> None:
        """DeleteObject (S3 answers the same whether or not the key was there)."""
        name = self._name(key)
        with self._calls(key):
            self._client.delete_object(Bucket=self.bucket, Key=name)

    def delete_prefix(self, prefix: str) -> int:
        """DeleteObjects in batches of DELETE_BATCH keys; how many were listed."""
        check_prefix(prefix)
        count = 0
        batch: list[str] = []
        for info in self._listing(prefix):
            batch.append(self.prefix + info.key)
            if len(batch) == DELETE_BATCH:
                count += self._delete_batch(prefix, batch)
                batch = []
        if batch:
            count += self._delete_batch(prefix, batch)
        return count

    # --- readers that are not this process ------------------------------------------------
    def local_path(self, key: str) -> Path | None:
        """None: objects are not files on this machine."""
        self._name(key)
        return None

    def reader_url(self, key: str, *, expires_seconds: int) -> str | None:
        """A presigned GET (SigV4: valid for at most 7 days), ranges allowed."""
        name = self._name(key)
        with self._calls(key):
            return self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": name},
                ExpiresIn=expires_seconds,
            )

    def public_url(self, key: str) -> str | None:
        """`public_base`/prefix+key, or None without a public base."""
        name = self._name(key)
        return f"{self.public_base}/{quote(name)}" if self.public_base else None

    # --- streaming writes: multipart objects ----------------------------------------------
    def start_multipart(self, key: str, *, content_type: str | None = None) -> str:
        """CreateMultipartUpload; S3's upload id."""
        name = self._name(key)
        with self._calls(key):
            answer = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=name, ContentType=content_type or DEFAULT_TYPE
            )
        return answer["UploadId"]

    def put_part(self, key: str, upload_id: str, number: int, source: Path) -> Part:
        """UploadPart from `source` with its Content-MD5; the returned ETag must be its md5."""
        check_part_number(number)
        name = self._name(key)
        digest = file_md5(Path(source))
        size = Path(source).stat().st_size
        with self._calls(key), open(source, "rb") as body:
            answer = self._client.upload_part(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentLength=size,
                ContentMD5=content_md5(digest),
            )
        self._check_etag(key, answer["ETag"], digest.hex())
        return Part(number=number, etag=digest.hex(), size=size)

    def finish_multipart(self, key: str, upload_id: str, parts: list[Part]) -> ObjectInfo:
        """CompleteMultipartUpload, once the parts keep S3's rules here (not only on AWS)."""
        ordered = check_parts(parts)
        name = self._name(key)
        listed = [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in ordered]
        with self._calls(key):
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},  # type: ignore[typeddict-item]
            )
        info = self.stat(key)
        if info is None:
            raise StorageUnavailable(f"{self._where}: {key!r} is missing after its upload")
        return info

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an unknown or finished upload is not an error."""
        name = self._name(key)
        try:
            with self._calls(key):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id
                )
        except ObjectMissing:
            pass

    # --- health ---------------------------------------------------------------------------
    def check(self) -> str | None:
        """HeadBucket on a client of its own, with short timeouts and no retry."""
        try:
            with self._calls(None):
                # One attempt: a health check answers now, it does not wait out a backoff.
                limits = self.limits
                checker = _client(self._credentials, limits, limits.check_timeout, 1)
                checker.head_bucket(Bucket=self.bucket)
        except ObjectMissing:
            return f"{self._where}: the bucket does not exist"
        except AppError as exc:
            return exc.detail
        return None

    # --- internals ------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        """The object name of `key` in the bucket."""
        return self.prefix + check_key(key)

    @contextmanager
    def _calls(self, key: str | None) -> Iterator[None]:
        """The one boundary where boto3's errors become the interface's."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(key, exc) from exc
        except NoCredentialsError as exc:
            raise StorageUnavailable(
                f"{self._where}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from exc
        except BotoCoreError as exc:
            # No connection, a timeout, a dropped stream: say which, never the whole message
            # (it can hold a presigned URL).
            raise StorageUnavailable(
                f"{self._where} cannot be reached ({type(exc).__name__}); try again later"
            ) from exc

    def _client_error(self, key: str | None, exc: ClientError) -> AppError:
        error: Any = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        what = f"{key!r}" if key else "the bucket"
        if code in MISSING_CODES or (status == 404 and code != "NoSuchBucket"):
            if code == "NoSuchUpload":
                return ObjectMissing(f"no unfinished multipart upload of {what}")
            return ObjectMissing(f"no object {what}")
        if code in PART_CODES:
            return PartRejected(f"{self._where} refused the parts of {what} ({code})")
        if code in FULL_CODES or status == 507:
            return InsufficientStorage(f"{self._where} is full: cannot write {what} ({code})")
        if code in REFUSED_CODES or status >= 500 or status in (403, 429) or "Slow" in code:
            return StorageUnavailable(f"{self._where} refused or failed a request ({code})")
        return AppError(f"{self._where} refused a request for {what} ({code} {status})")

    def _check_etag(self, key: str, etag: str, md5_hex: str) -> None:
        """The server stored other bytes than were sent (or encrypts with its own ETags)."""
        if bare_etag(etag) != md5_hex:
            raise PartRejected(f"{self._where} stored {key!r} with ETag {etag}, not {md5_hex}")

    def _pieces(self, key: str, body: Any) -> Iterator[bytes]:
        try:
            with self._calls(key):
                yield from body.iter_chunks(PIECE_BYTES)
        finally:
            body.close()

    def _listing(self, prefix: str) -> Iterator[ObjectInfo]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        with self._calls(prefix):
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    modified = item["LastModified"].timestamp()
                    yield ObjectInfo(key, item["Size"], bare_etag(item["ETag"]), modified)

    def _delete_batch(self, prefix: str, names: list[str]) -> int:
        objects = [{"Key": name} for name in names]
        with self._calls(prefix):
            answer = self._client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": objects, "Quiet": True},  # type: ignore[typeddict-item]
            )
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise StorageUnavailable(
                f"{self._where} kept {len(answer['Errors'])} objects under {prefix!r} "
                f"({first.get('Code')})"
            )
        return len(names)

    def _put_in_parts(
        self, key: str, source: Path, size: int, content_type: str | None
    ) -> ObjectInfo:
        """A large file as a multipart upload of `part_bytes` pieces; aborted on failure."""
        count = -(-size // self.limits.part_bytes)
        if count > MAX_PARTS:
            raise PartRejected(f"{key!r}: {size} bytes make more than {MAX_PARTS} parts")
        upload_id = self.start_multipart(key, content_type=content_type)
        try:
            parts = [self._file_part(key, upload_id, source, n) for n in range(1, count + 1)]
            return self.finish_multipart(key, upload_id, parts)
        except BaseException:
            self.abort_multipart(key, upload_id)
            raise

    def _file_part(self, key: str, upload_id: str, source: Path, number: int) -> Part:
        """Part `number` of `source`, read into memory (part_bytes at most)."""
        with open(source, "rb") as handle:
            handle.seek((number - 1) * self.limits.part_bytes)
            data = handle.read(self.limits.part_bytes)
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        with self._calls(key):
            answer = self._client.upload_part(
                Bucket=self.bucket,
                Key=self._name(key),
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ContentMD5=content_md5(digest),
            )
        self._check_etag(key, answer["ETag"], digest.hex())
        return Part(number=number, etag=digest.hex(), size=len(data))


def _client(
    credentials: dict[str, Any], limits: S3Limits, read_timeout: float, attempts: int
) -> "S3Client":
    """A boto3 S3 client with bounded timeouts and retries, the machine's CA bundle, path-style
    addressing on a custom endpoint (most S3-compatible servers want it) and no checksums
    beyond the Content-MD5 the store sends (some servers refuse the newer ones)."""
    custom = credentials["endpoint_url"] is not None
    config = Config(
        connect_timeout=limits.connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": attempts, "mode": "standard"},
        max_pool_connections=limits.max_pool_connections,
        s3={"addressing_style": "path" if custom else "auto"},
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    with _SESSION_LOCK:
        return _session().client("s3", config=config, verify=_ca_bundle(), **credentials)


@functools.cache
def _session() -> boto3.session.Session:
    """One session for every client: it keeps the service model that a new session would load
    again (a second per client). Not thread-safe (hence the lock); its clients are."""
    return boto3.session.Session()


def _ca_bundle() -> str | None:
    """The CA bundle to trust: botocore reads AWS_CA_BUNDLE itself, else SSL_CERT_FILE or the
    system's bundle (botocore's default is certifi's, which a TLS-inspecting proxy breaks)."""
    if os.environ.get("AWS_CA_BUNDLE"):
        return None
    cafile = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().cafile
    return cafile if cafile and os.path.isfile(cafile) else None


def _without_userinfo(url: str) -> str:
    """`url` without a user:password@ part (never shown in a message)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()
