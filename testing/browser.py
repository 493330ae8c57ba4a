"""A real headless Chromium for the web panel's tests and benchmark: Debian's ``chromium`` driven by
``chromium-driver`` through Selenium (a test extra), started offline with a fresh profile.

:func:`missing_browser` says why there is no browser to drive (None when there is one);
:func:`open_browser` starts one, with the browser console kept (``console_errors`` reads it).
The flags are the ones known to work on a machine without a GPU or a display.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--mute-audio",
    # A hidden tab must go on rendering (the second tab of a test is never in front).
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)


def _first_existing(candidates: tuple[str, ...], environ_key: str) -> str | None:
    wanted = os.environ.get(environ_key)
    if wanted:
        return wanted if os.path.exists(wanted) else None
    return next((path for path in candidates if os.path.exists(path)), None)


def missing_browser() -> str | None:
    """Why the panel cannot be driven here (a sentence naming what to install), or None."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    if _first_existing(CHROMIUM_CANDIDATES, "COMPOSITORD_CHROMIUM") is None:
        return "no chromium (apt-get install chromium chromium-driver, or set COMPOSITORD_CHROMIUM)"
    if _first_existing(DRIVER_CANDIDATES, "COMPOSITORD_CHROMEDRIVER") is None:
        return "no chromedriver (apt-get install chromium-driver, or set COMPOSITORD_CHROMEDRIVER)"
    return None


@contextmanager
def open_browser(*, width: int = 1440, height: int = 900) -> Iterator[Any]:
    """A started ``selenium.webdriver.Chrome``; quit (and its profile removed) on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    reason = missing_browser()
    if reason is not None:
        raise RuntimeError(reason)
    profile = tempfile.mkdtemp(prefix="compositord-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _first_existing(CHROMIUM_CANDIDATES, "COMPOSITORD_CHROMIUM") or ""
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(_first_existing(DRIVER_CANDIDATES, "COMPOSITORD_CHROMEDRIVER") or "")
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_script_timeout(30)
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[str]:
    """The console messages of level SEVERE since the last call (reading the log empties it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
