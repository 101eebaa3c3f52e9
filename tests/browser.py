"""Start Debian's Chromium headless under chromedriver (selenium), or say why not.

Shared by the browser test and scripts/bench_preview.py. Nothing is downloaded: the browser and
driver are the system's (`apt-get install chromium chromium-driver`, `pip install selenium`).
"""

from __future__ import annotations

import shutil
import tempfile

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1100,700",
)


def missing() -> str | None:
    """Why a browser cannot be started here (None: it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for tool, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install -y {package})"
    return None


def start_chromium(user_data_dir: str | None = None):
    """A headless Chromium WebDriver with a fresh profile; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    options.page_load_strategy = "eager"  # do not wait for the endless MJPEG image
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir or tempfile.mkdtemp(prefix='longvid-chromium-')}")
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
