"""The CORS policies by kind of path (services/core/cors.py), as plain functions."""

from starlette.datastructures import Headers

from services.core.cors import PlaybackPolicy, has_direct_token, is_playback, with_headers


def test_open_playback_answers_any_origin_and_none_the_same_way():
    policy = PlaybackPolicy(["*"])
    for origin in ("https://a.example", None):
        headers = dict(policy.headers(origin))
        assert headers[b"access-control-allow-origin"] == b"*"
        assert b"Content-Range" in headers[b"access-control-expose-headers"]
        assert b"vary" not in headers, "one answer for every site: nothing to vary on"


def test_listed_playback_origins_are_named_and_varied_on():
    policy = PlaybackPolicy(["https://a.example"])
    assert dict(policy.headers("https://a.example"))[b"access-control-allow-origin"] == (
        b"https://a.example"
    )
    assert policy.headers("https://b.example") == [(b"vary", b"Origin")]
    assert policy.headers(None) == [(b"vary", b"Origin")]


def test_a_range_preflight_is_allowed_for_a_listed_origin_only():
    policy = PlaybackPolicy(["https://a.example"])
    asked = {"access-control-request-method": "GET", "access-control-request-headers": "range"}

    status, headers = policy.preflight(Headers({"origin": "https://a.example", **asked}))
    refused, refusal = policy.preflight(Headers({"origin": "https://b.example", **asked}))

    assert status == 204
    assert dict(headers)[b"access-control-allow-headers"] == b"range"
    assert refused == 403
    assert b"access-control-allow-origin" not in dict(refusal)


def test_set_headers_replace_theirs_and_vary_adds_once():
    have = [(b"vary", b"Accept-Encoding"), (b"access-control-allow-origin", b"https://x")]
    extra = [(b"access-control-allow-origin", b"*"), (b"vary", b"Origin")]

    merged = with_headers(have, extra)

    assert merged.count((b"access-control-allow-origin", b"*")) == 1
    assert (b"access-control-allow-origin", b"https://x") not in merged
    assert [v for k, v in merged if k == b"vary"] == [b"Accept-Encoding", b"Origin"]
    assert sorted(with_headers(merged, extra)) == sorted(merged), "idempotent"


def test_which_requests_are_playback_and_which_carry_a_direct_token():
    assert is_playback("/stream/abc/master.m3u8") and not is_playback("/streams")

    def scope(path: str, query: bytes) -> dict[str, object]:
        return {"path": path, "query_string": query}

    assert has_direct_token(scope("/files/", b"direct_token=x"))
    assert has_direct_token(scope("/upload/chunk", b"upload_id=1&direct_token=x"))
    assert not has_direct_token(scope("/videos", b"direct_token=x")), "uploads only"
    assert not has_direct_token(scope("/files/", b"token=x"))
