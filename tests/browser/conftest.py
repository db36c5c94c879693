"""A real browser for the page: Debian's headless Chromium driven by Playwright's sync API.

No browser is ever downloaded (`playwright install` is never run): Playwright drives the
system's /usr/bin/chromium, which `scripts/install.sh --test` installs.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, ViewportSize, sync_playwright

from tests.browser.other_origin import other_origin
from tests.harness import ROOT, Platform

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # The tests start playback from script, with no click to count as a user gesture.
    "--autoplay-policy=no-user-gesture-required",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module (closed before other modules' asyncio tests)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_page(browser: Browser, platform: Platform, viewport: ViewportSize) -> Page:
    """A page in a fresh context (its own localStorage) whose relative URLs hit the gateway."""
    context = browser.new_context(base_url=platform.url, viewport=viewport)
    return context.new_page()


@pytest.fixture
def page(browser: Browser, platform: Platform) -> Iterator[Page]:
    """A desktop-sized page; the test fails if the page throws an uncaught error."""
    opened = open_page(browser, platform, DESKTOP)
    errors: list[Error] = []
    opened.on("pageerror", lambda error: errors.append(error))
    yield opened
    opened.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/ at the repository root (git-ignored): screenshots for a person to look at."""
    folder = ROOT / "test-artifacts"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """The other site's origin, e.g. http://127.0.0.1:41234."""
    with other_origin() as url:
        yield url


@pytest.fixture
def foreign_page(browser: Browser, origin: str) -> Iterator[Page]:
    """A page whose relative URLs hit the other origin; fails the test on an uncaught error."""
    context = browser.new_context(base_url=origin, viewport=DESKTOP)
    opened = context.new_page()
    errors: list[Error] = []
    opened.on("pageerror", lambda error: errors.append(error))
    yield opened
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
