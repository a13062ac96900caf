"""The page at / in a real headless Chromium (Debian's), driven by Playwright, against a real
uvicorn serving the shipped models and the real detectors (so the screenshot in docs/ shows
what a user sees).

Needs Debian's `chromium` and the `playwright` package (a dev dependency; no browser download:
it drives /usr/bin/chromium). Skipped without them, except where EMOTION_REQUIRE_BROWSER=1
(as in CI): then it fails. EMOTION_PAGE_SCREENSHOT=PATH keeps the screenshot there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import images
from tests.servers import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

_missing = [
    what
    for what, ok in (("playwright", sync_playwright), ("chromium", os.access(CHROMIUM, os.X_OK)))
    if not ok
]
if _missing and os.environ.get("EMOTION_REQUIRE_BROWSER") != "1":
    pytestmark = pytest.mark.skip(reason=f"needs {', '.join(_missing)} (see .ci/run)")


@pytest.fixture(scope="module")
def url(assets_dir, tmp_path_factory):
    env = {
        "EMOTION_MODELS_DIR": str(Path(__file__).resolve().parents[1] / "models"),
        "EMOTION_ASSETS_DIR": str(assets_dir),
        "EMOTION_INFERENCE_THREADS": "1",
        "EMOTION_API_KEY": "page-key",
    }
    log = tmp_path_factory.mktemp("page") / "server.log"
    with running_server(["app"], env, log) as (_, base):
        yield base


def test_the_page_boxes_and_charts_the_faces_of_an_uploaded_photo(url, tmp_path):
    photo = tmp_path / "group.png"
    photo.write_bytes(images.encode(images.group(), "PNG"))
    shot = Path(os.environ.get("EMOTION_PAGE_SCREENSHOT") or tmp_path / "page.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(url + "/")  # the page itself needs no key
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#status.error", timeout=20_000)  # no key: the 401 is shown
            assert "X-API-Key" in page.inner_text("#status")
            page.fill("#key", "page-key")
            page.set_input_files("#file", [])
            page.set_input_files("#file", str(photo))
            page.wait_for_function(
                "document.querySelector('#result').dataset.faces === '3'", timeout=20_000
            )
            labels = page.locator("#faces .face .label").all_inner_texts()
            assert len(labels) == 3 and all(t.split(":")[0].isdigit() for t in labels)
            assert page.locator("#faces .face").first.locator(".bar").count() == 7
            assert page.eval_on_selector("#view", "c => [c.width, c.height]") == [640, 360]
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
