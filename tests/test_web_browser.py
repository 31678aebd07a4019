"""End to end in a real headless Chromium: uvicorn serves the dashboard, Playwright drives it.

Uses Debian's ``/usr/bin/chromium`` (``playwright install`` cannot download browsers
here). Without it the test is skipped with the reason — unless ``CI`` is set, where a
missing browser is a failure (``.ci/run`` installs it with apt-get).

``TRIALWATCH_UPDATE_SCREENSHOT=1`` also copies the screenshot to
``docs/screenshot-trial.png`` (the README's picture of the trial page).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_web import ADDED_CRITERION, NCT, SCRIPT_TITLE, build_trial_database

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot-trial.png"


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dashboard over a populated database, served by uvicorn on a free local port."""
    import uvicorn

    from trialwatch.monitor.web import create_app

    db = build_trial_database(tmp_path_factory.mktemp("browser"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(db), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        db.close()


def test_trial_page_in_headless_chromium_shows_timeline_diff_and_escaped_title(
        base_url: str, tmp_path: Path):
    _need(CHROMIUM.exists(), f"Debian's chromium is not installed at {CHROMIUM} "
                             "(apt-get install -y chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:  # pragma: no cover - depends on the environment
        _need(False, "the playwright package is not installed")
        raise

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

            page.goto(f"{base_url}/")
            page.get_by_role("link", name=SCRIPT_TITLE).click()  # the list links to the trial
            expect(page).to_have_url(f"{base_url}/trials/{NCT}")

            page.goto(f"{base_url}/trials/{NCT}?from=2&to=6#diff")
            timeline = page.locator("svg.timeline")
            expect(timeline).to_be_visible()
            expect(timeline.locator("rect")).to_have_count(6)  # one status band per version
            expect(timeline.locator("circle")).to_have_count(6)  # one enrollment dot each
            diff = page.locator("table.diff")
            expect(diff).to_be_visible()
            expect(diff.locator(".cell.added").first).to_contain_text(ADDED_CRITERION)
            expect(page.locator("#diff h3")).to_have_text("v2 → v6: 4 changes")

            # The <script> in the registry title is text on the page, never markup.
            expect(page.locator("#trial-title")).to_have_text(SCRIPT_TITLE)
            assert page.locator("script").count() == 0
            assert dialogs == []
            # The stylesheet loaded under the page's Content-Security-Policy.
            added_background = diff.locator(".cell.added").first.evaluate(
                "cell => getComputedStyle(cell).backgroundColor")
            assert added_background not in ("", "rgba(0, 0, 0, 0)", "transparent")

            screenshot = tmp_path / "trial.png"
            page.goto(f"{base_url}/trials/{NCT}?from=2&to=6")
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 20_000
            assert screenshot.read_bytes().startswith(b"\x89PNG")
            if os.environ.get("TRIALWATCH_UPDATE_SCREENSHOT"):
                DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(screenshot, DOCS_SCREENSHOT)
        finally:
            browser.close()
