"""Small helpers of the browser tests: waiting on the page, finding by test id, WCAG contrast."""

from __future__ import annotations

from typing import Any

from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def wait(browser: Chrome, condition: Any, timeout: float = 30) -> Any:
    return WebDriverWait(browser, timeout).until(lambda driver: condition(driver))


def visible(browser: Chrome, element_id: str) -> Any:
    """The element with `element_id` once it is displayed."""
    return wait(browser, lambda d: (found := d.find_element(By.ID, element_id)).is_displayed() and found)


def by_test_id(browser: Chrome, test_id: str) -> Any:
    return browser.find_element(By.CSS_SELECTOR, f"[data-testid='{test_id}']")


def contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two computed CSS colours (`rgb(...)` / `rgba(...)`)."""

    def luminance(colour: str) -> float:
        channels = [float(v) / 255 for v in colour[colour.index("(") + 1: -1].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)
