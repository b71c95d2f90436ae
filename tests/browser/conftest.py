"""A headless Chromium driven through Selenium, from Debian's `chromium` and `chromium-driver` packages.

Nothing is downloaded at test time: the browser and its driver are the system's binaries, named
explicitly (so Selenium Manager never runs). Without them the browser tests skip, saying how to install
them; any other failure (our own code, Selenium itself) is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

INSTALL_HINT = "apt-get install -y chromium chromium-driver (Debian; .ci/run installs them)"


def _binary(env: str, *names: str) -> str | None:
    explicit = os.environ.get(env)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((found for name in names if (found := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """(browser, driver) paths; skips the browser tests when either binary is missing."""
    browser = _binary("CHROMIUM_BINARY", "chromium", "chromium-browser")
    driver = _binary("CHROMEDRIVER_BINARY", "chromedriver")
    if browser is None or driver is None:
        missing = "chromium" if browser is None else "chromedriver"
        pytest.skip(f"no {missing} binary for the browser tests; install it with: {INSTALL_HINT}")
    return browser, driver


@pytest.fixture(scope="module")
def browser(chromium: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--force-device-scale-factor=1", "--lang=en-US",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
