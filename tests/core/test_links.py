"""The public addresses of a video, and the settings they are built from."""

import pytest
from pydantic import ValidationError

from services.core import links
from services.core.errors import InvalidInput
from services.core.settings import Settings

VIDEO_ID = "0123456789abcdef0123456789abcdef"
TOKEN = "1900000000." + "ab" * 32


def test_the_base_is_the_request_scheme_and_host_without_public_url() -> None:
    settings = Settings(public_url="")
    assert links.public_base(settings, scheme="http", host="127.0.0.1:8000") == (
        "http://127.0.0.1:8000"
    )
    assert links.public_base(settings, scheme="https", host="[::1]:8443") == "https://[::1]:8443"


def test_public_url_wins_over_the_request() -> None:
    settings = Settings(public_url="https://videos.example.com/")
    assert links.public_base(settings, scheme="http", host="10.0.0.5:8000") == (
        "https://videos.example.com"
    )


@pytest.mark.parametrize(
    "host", ["", 'evil.example"><script>', "a b", "evil.example/path", "x@y", "a:b:c"]
)
def test_a_host_header_that_is_no_host_is_refused(host: str) -> None:
    with pytest.raises(InvalidInput, match="PUBLIC_URL"):
        links.public_base(Settings(public_url=""), scheme="http", host=host)


def test_page_urls_carry_a_valid_token_and_the_embed_options() -> None:
    base = "https://v.example"
    assert links.watch_url(base, VIDEO_ID) == f"{base}/watch/{VIDEO_ID}"
    assert links.watch_url(base, VIDEO_ID, TOKEN) == f"{base}/watch/{VIDEO_ID}?token={TOKEN}"
    assert links.embed_url(base, VIDEO_ID, TOKEN, {"start": "5"}) == (
        f"{base}/embed/{VIDEO_ID}?token={TOKEN}&start=5"
    )
    assert links.watch_url(base, VIDEO_ID, "not-a-token") == f"{base}/watch/{VIDEO_ID}"
    assert links.oembed_url(base, f"{base}/watch/{VIDEO_ID}") == (
        f"{base}/oembed?url=https%3A%2F%2Fv.example%2Fwatch%2F{VIDEO_ID}&format=json"
    )


@pytest.mark.parametrize(
    "value",
    ["videos.example.com", "ftp://videos.example.com", "https://", "https://v.example/?a=1"],
)
def test_public_url_must_be_an_http_base_url(value: str) -> None:
    with pytest.raises(ValidationError, match="PUBLIC_URL"):
        Settings(public_url=value)


@pytest.mark.parametrize(
    "value", ["*", "'none'", "https://a.example https://*.b.example:8443", "https:", "'self'"]
)
def test_embed_frame_ancestors_takes_csp_sources(value: str) -> None:
    assert Settings(embed_frame_ancestors=value).embed_frame_ancestors == value


@pytest.mark.parametrize(
    "value",
    ["", "https://a.example; script-src *", "a.example,b.example", "https://a.example\r\nX: y"],
)
def test_embed_frame_ancestors_refuses_what_would_smuggle_other_directives(value: str) -> None:
    with pytest.raises(ValidationError, match="EMBED_FRAME_ANCESTORS"):
        Settings(embed_frame_ancestors=value)
