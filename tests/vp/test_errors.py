"""Every failure the client can meet becomes one line that says what to do."""

import httpx
import pytest

from vp.api import Api, Target
from vp.errors import CliError, Rejected, for_status


def answer(status: int, body: object = None, text: str = "") -> httpx.Response:
    if body is not None:
        return httpx.Response(status, json=body)
    return httpx.Response(status, text=text)


def said(response: httpx.Response, *, uploading: bool = False, token: bool = False) -> CliError:
    return for_status(response, subject="clip.mp4", token_given=token, uploading=uploading)


@pytest.mark.parametrize(
    ("response", "uploading", "token", "expected"),
    [
        (answer(401), False, False, "this needs the admin token: set VP_TOKEN"),
        (answer(401), False, True, "the admin token given was refused: set VP_TOKEN"),
        (answer(401), True, False, "this server needs a token to upload: set VP_UPLOAD_TOKEN"),
        (answer(401), True, True, "the upload token given was refused"),
        (answer(403), False, False, "clip.mp4 is private: get a signed link with `vp token ID`"),
        (answer(404), False, False, "clip.mp4 is not on this server: `vp list` shows"),
        (answer(413, {"detail": "limit 5"}), True, False, "clip.mp4 is too large for this server"),
        (answer(507, {"detail": "full"}), True, False, "disk is too full to take clip.mp4"),
        (answer(502, text="<html>bad gateway</html>"), False, False, "failed (502) on clip.mp4"),
    ],
)
def test_each_status_says_what_to_do(response, uploading, token, expected):
    error = said(response, uploading=uploading, token=token)
    assert expected in error.message
    assert "\n" not in error.message


def test_refusals_of_a_file_are_rejections_that_let_the_next_file_go():
    for status in (400, 413, 422):
        assert isinstance(said(answer(status, {"detail": "no"}), uploading=True), Rejected)
    assert not isinstance(said(answer(401), uploading=True), Rejected)


def test_a_detail_on_several_lines_is_one_line():
    error = said(answer(422, {"error": "not_a_video", "detail": "bad\n  file\r\nhere"}))
    assert error.message == "the server refused clip.mp4: bad file here"


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ConnectError("refused"), "cannot reach the platform at http://vp.test: is it"),
        (httpx.ReadTimeout("slow"), "http://vp.test did not answer in time (ReadTimeout)"),
    ],
)
def test_a_server_that_does_not_answer_is_one_line(failure, expected):
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    transport = httpx.MockTransport(fail)
    with (
        Api(Target("http://vp.test"), transport=transport) as api,
        pytest.raises(CliError) as error,
    ):
        api.videos(status=None, limit=10)
    assert error.value.message.startswith(expected)


def test_the_server_option_must_be_an_http_url():
    with pytest.raises(CliError, match="--server must be an http"):
        Target.of("127.0.0.1:8000", None)
    assert Target.of("http://h:1/", "t") == Target("http://h:1", "t", "t")
    assert Target.of("http://h:1", "", "u") == Target("http://h:1", None, "u")


def test_a_server_that_is_not_the_platform_is_one_line_asking_about_server():
    def page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>some other site</html>")

    api = Api(Target("http://vp.test"), transport=httpx.MockTransport(page))
    with api, pytest.raises(CliError) as error:
        api.video("0" * 32)
    assert error.value.message == (
        f"http://vp.test did not answer /videos/{'0' * 32} as the platform does: "
        "is --server (VP_SERVER) the platform's gateway?"
    )
