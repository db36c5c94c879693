"""Fixtures of the S3 tests: the platform on the test run's S3 server (SeaweedFS), and a
store on it. Nothing here skips on CI (tests/conftest.py's s3_server fails there)."""

import uuid
from collections.abc import Iterator

import httpx
import pytest

from services.core.storage.s3 import S3Store
from tests.harness import Platform, s3_env
from tests.s3server import S3Server


@pytest.fixture(scope="session")
def s3_platform(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Platform]:
    """The whole platform with STORAGE_URL on the S3 server: its folder is scratch only."""
    running = Platform(tmp_path_factory.mktemp("s3platform") / "scratch", **s3_env(s3_server))
    running.start()
    yield running
    running.drop()


@pytest.fixture(scope="session")
def s3_client(s3_platform: Platform) -> Iterator[httpx.Client]:
    with s3_platform.client() as http:
        yield http


@pytest.fixture
def platform_store(s3_platform: Platform, s3_server: S3Server) -> S3Store:
    """A store on the platform's own bucket and prefix (to look at what it stored)."""
    return s3_platform.bucket(s3_server.endpoint)


@pytest.fixture
def fresh_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"
