"""The page on a locked-down deployment (UPLOAD_TOKEN set): it holds no upload token, so an
upload first says what is needed; once the operator's admin token is saved in the browser, the
page uploads through a one-time direct upload URL, and the video transcodes to `ok`."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Request, expect

from tests.browser.conftest import DESKTOP, open_page
from tests.harness import Platform, wait_status


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose uploading is closed."""
    storage = tmp_path_factory.mktemp("locked-page") / "storage"
    running = Platform(storage, UPLOAD_TOKEN="closed-to-the-page").start()
    yield running
    running.drop()


def test_the_page_uploads_through_a_direct_url_once_the_operator_signs_in(
    browser: Browser, locked: Platform, clips: dict[str, Path]
) -> None:
    page = open_page(browser, locked, DESKTOP)
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    page.goto("/")

    # No admin token in this browser: the upload says what is needed, and the page asks.
    page.set_input_files("#file-input", clips["small"])
    row = page.locator(".upload-item")
    expect(row).to_have_attribute("data-state", "failed", timeout=60_000)
    expect(row).to_contain_text("needs a token")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Admin token").fill(locked.admin_token)
    dialog.get_by_role("button", name="Save token").click()

    row.get_by_role("button", name="Retry").click()
    expect(row).to_have_attribute("data-state", "done", timeout=90_000)

    made = [r for r in sent if r.url.endswith("/upload/direct") and r.method == "POST"]
    # Refused without the admin token (the 401 the page explained), made once with it.
    assert [r.headers.get("authorization") for r in made] == [
        None,
        f"Bearer {locked.admin_token}",
    ]
    uploads = [r for r in sent if "/upload/chunk" in r.url or "/upload/complete" in r.url]
    assert uploads and all("direct_token=" in r.url for r in uploads)
    assert all("authorization" not in r.headers for r in uploads), "no token but the URL's"
    with locked.client() as client:
        videos = client.get("/videos").json()
        items = videos["items"] if isinstance(videos, dict) else videos
        (video,) = [v for v in items if v["filename"] == clips["small"].name]
        assert wait_status(client, video["id"])["overall"] == "ok"
    no_token = httpx.post(f"{locked.url}/upload/init", data={"filename": "a.mp4"})
    assert no_token.status_code == 401, "uploading itself stays closed"
    page.context.close()
