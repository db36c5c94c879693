"""The store the settings name: STORAGE_URL (empty: the local folder STORAGE_DIR;
`s3://bucket/prefix`: an S3-compatible bucket reached with the AWS_* settings)."""

import ipaddress
import re
import threading
from urllib.parse import urlsplit

from services.core.settings import Settings
from services.core.storage.interface import Store
from services.core.storage.keys import InvalidKey, check_prefix
from services.core.storage.local import LocalStore

# AWS's rules for bucket names (general purpose buckets), which every S3 server accepts.
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def open_store(settings: Settings) -> Store:
    """The settings' store; ValueError naming the setting when one is malformed."""
    public_base = check_public_url(settings.media_public_url)
    target = parse_storage_url(settings.storage_url)
    if target is None:
        return LocalStore(settings.storage_dir, public_base=public_base)
    # Imported here: boto3 takes a while to load, and the local folder needs none of it.
    from services.core.storage.s3 import S3Limits, S3Store

    bucket, prefix = target
    limits = S3Limits(
        connect_timeout=settings.s3_connect_timeout_seconds,
        read_timeout=settings.s3_read_timeout_seconds,
        max_attempts=settings.s3_max_attempts,
    )
    return S3Store(
        bucket,
        prefix,
        endpoint_url=settings.aws_endpoint_url or None,
        access_key=settings.aws_access_key_id or None,
        secret_key=settings.aws_secret_access_key or None,
        region=settings.aws_region,
        public_base=public_base,
        limits=limits,
    )


def parse_storage_url(url: str) -> tuple[str, str] | None:
    """None for the local folder (an empty URL), else the bucket and the prefix ('' or a
    prefix without its trailing '/') of `s3://bucket/prefix`."""
    if not url.strip():
        return None
    parts = urlsplit(url.strip())
    if parts.scheme != "s3":
        raise ValueError(
            f"STORAGE_URL: {url!r} is not s3://bucket/prefix (leave it empty for the local "
            "folder STORAGE_DIR)"
        )
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError(
            "STORAGE_URL: give s3://bucket/prefix only; the endpoint and the keys go in "
            "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return check_bucket(parts.netloc), _prefix(parts.path)


def check_bucket(bucket: str) -> str:
    """`bucket` when S3 accepts it as a bucket name."""
    if not bucket:
        raise ValueError("STORAGE_URL: no bucket: write s3://bucket or s3://bucket/prefix")
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket or _is_ip(bucket):
        raise ValueError(
            f"STORAGE_URL: {bucket!r} is not a bucket name (3 to 63 lower-case letters, "
            "digits, '.' and '-', starting and ending with a letter or digit)"
        )
    return bucket


def check_public_url(url: str) -> str | None:
    """MEDIA_PUBLIC_URL without its trailing '/', or None when empty."""
    if not url.strip():
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"MEDIA_PUBLIC_URL: {url!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise ValueError("MEDIA_PUBLIC_URL: give the base URL only, with no ?query or #part")
    return url.strip().rstrip("/")


def _prefix(path: str) -> str:
    prefix = path.strip("/")
    if prefix:
        try:
            check_prefix(f"{prefix}/")
        except InvalidKey as exc:
            raise ValueError(f"STORAGE_URL: bad prefix: {exc.detail}") from exc
    return prefix


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_opened: dict[tuple[object, ...], Store] = {}
_opening = threading.Lock()


def store_of(settings: Settings) -> Store:
    """The process's one store for these settings (opened once: a boto3 client is costly to
    make and safe to share between threads)."""
    key = (
        settings.storage_url,
        str(settings.storage_dir),
        settings.aws_endpoint_url,
        settings.aws_access_key_id,
        settings.aws_region,
        settings.media_public_url,
    )
    with _opening:
        if key not in _opened:
            _opened[key] = open_store(settings)
        return _opened[key]


def uses_object_storage(settings: Settings) -> bool:
    """True when media live in a bucket (STORAGE_URL set): STORAGE_DIR is then scratch only."""
    return parse_storage_url(settings.storage_url) is not None
