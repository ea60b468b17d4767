"""The report in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`, which `make test`
installs) opens the report of a small real run (with circuits) and the comparison report, at a laptop size.

Checked: no console errors (a CSP violation or a broken image would be one), every section present, every
image decoded with a non-zero size, a screenshot taken; the entity named `<script>alert(1)</script>` shows as
text and nothing runs (no script element, no event-handler attribute, no alert).
Skipped, with the reason, only when chromium or chromedriver is not installed.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from .test_report import CONFIG_NAME, ENTITY, RUN_NAME, RUN_SECTIONS, circuits, comparison, runs  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless Chromium is not installed (`make test` installs the Debian packages chromium and "
           "chromium-driver; by hand: apt-get install -y --no-install-recommends chromium chromium-driver)",
)  # fmt: skip
LAPTOP = (1366, 768)
CATCH_ALERTS = "window.__alerts = []; for (const f of ['alert', 'confirm', 'prompt']) " \
               "{ window[f] = (m) => { window.__alerts.push(String(m)); }; }"  # fmt: skip
IMAGES = "return Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);"
TEXT_CELLS = "document.querySelectorAll('details').forEach(d => d.open = true); " \
             "return Array.from(document.querySelectorAll('td, h1, pre, p, li'), e => e.innerText);"  # fmt: skip
OVERFLOW = "return Array.from(document.querySelectorAll('.table-wrap'), w => " \
           "[(w.querySelector('caption') || {innerText: ''}).innerText, w.scrollWidth - w.clientWidth]);"  # fmt: skip
ACTIVE = "return [document.scripts.length, document.querySelectorAll('[onerror],[onload],[onmouseover]').length, " \
         "window.__alerts, document.querySelectorAll('img:not([src^=\"data:image/png\"])').length];"  # fmt: skip


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = tmp_path_factory.mktemp("chromium")  # profile and temp files stay in pytest's folder
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={LAPTOP[0]},{LAPTOP[1]}", "--force-device-scale-factor=1",
                f"--user-data-dir={home / 'profile'}"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(DRIVER, env={**os.environ, "TMPDIR": str(home)})
    driver = webdriver.Chrome(service=service, options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_ALERTS})
    yield driver
    driver.quit()


def viewport(driver, width: int, height: int) -> None:
    """The page's viewport in CSS pixels (window sizes include the browser's own frame)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip


def open_page(driver, path: Path, shots: Path) -> dict:
    """Load a report, take laptop-size and full-page screenshots; returns what the checks need."""
    viewport(driver, *LAPTOP)
    driver.get(path.resolve().as_uri())
    state = driver.execute_script("return document.readyState")
    shots.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shots / "laptop.png"))
    height = driver.execute_script("return document.documentElement.scrollHeight")
    viewport(driver, LAPTOP[0], min(height, 16000))
    driver.save_screenshot(str(shots / "full.png"))
    return {"state": state, "errors": [e for e in driver.get_log("browser") if e["level"] == "SEVERE"],
            "sections": driver.execute_script("return Array.from(document.querySelectorAll('section'), s => s.id);"),
            "images": driver.execute_script(IMAGES), "text": driver.execute_script(TEXT_CELLS),
            "active": driver.execute_script(ACTIVE), "overflow": driver.execute_script(OVERFLOW)}  # fmt: skip


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def check_page(seen: dict, sections: list[str], n_images: int, shots: Path) -> None:
    assert seen["state"] == "complete"
    assert seen["errors"] == [], seen["errors"]
    assert seen["sections"] == sections
    assert len(seen["images"]) == n_images
    for complete, width, height, alt in seen["images"]:
        assert complete and width > 0 and height > 0, f"image not decoded: {alt}"
    scripts, handlers, alerts, other_images = seen["active"]
    assert (scripts, handlers, alerts, other_images) == (0, 0, [], 0)
    assert png_size(shots / "laptop.png") == (LAPTOP[0], LAPTOP[1])
    assert png_size(shots / "full.png")[1] > LAPTOP[1]


def test_run_report_in_chromium(browser, circuits, tmp_path):
    run, _ = circuits
    shots = Path(os.environ.get("KDYN_SCREENSHOTS", tmp_path)) / "run"
    seen = open_page(browser, run / "circuits-report.html", shots)
    check_page(seen, RUN_SECTIONS[:-1] + ["circuits", "findings"], 10, shots)
    assert ENTITY in seen["text"]  # a table cell whose rendered text is the entity's name, verbatim
    assert any(RUN_NAME in t for t in seen["text"]) and any(CONFIG_NAME in t for t in seen["text"])


def test_comparison_report_in_chromium(browser, comparison, tmp_path):
    shots = Path(os.environ.get("KDYN_SCREENSHOTS", tmp_path)) / "comparison"
    seen = open_page(browser, comparison, shots)
    check_page(seen, ["setup", "comparison", "findings"], 2, shots)
    headline = [extra for caption, extra in seen["overflow"] if caption.startswith("Headline")]
    assert headline == [0], f"the headline table scrolls sideways on a laptop screen by {headline} px"
    assert any(RUN_NAME in t for t in seen["text"])
