"""A headless chromium driven by selenium, for the browser tests of `mrhd serve`.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Where they or selenium
are missing the tests skip with the reason, and fail under ``CI=true``. The browser never goes to
the network (no component updates, no background requests) and starts from a fresh profile.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--mute-audio")


def _missing(message: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver) or skip/fail saying what to install."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed (pip install -c constraints.txt -e '.[dev]')")
    chromium = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                                 shutil.which("google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        _missing("chromium and chromedriver are needed for the browser tests "
                 "(Debian: apt-get install chromium chromium-driver)")
    return chromium, driver


def start_chromium(profile_dir: Path, width: int = 1280, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_paths()
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.binary_location = chromium
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.set_script_timeout(30)
    return browser
