"""The playground page in a real headless Chromium against a live server (uvicorn on 127.0.0.1, tiny random
artifacts of every task, an API key): the key prompt, the model card with its report figures, a prediction
of each task with what the page shows for it, abstain, honest errors, a phone-width window, and nothing
loaded from anywhere else. Screenshots go to the test's tmp dir; with SAVE_SCREENSHOTS=1 the sentiment one
is also copied to docs/playground.png (the README's picture)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from selenium.webdriver import Chrome
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.browser.page import by_test_id, contrast, visible, wait
from tests.factories import make_tiny_generation_artifact, make_tiny_sentiment_artifact, make_tiny_translation_artifact
from tests.service.live import LiveServer, live_server
from training.core.reports import plot_reliability, plot_risk_coverage, plot_training_curves

ROOT = Path(__file__).resolve().parents[2]
KEY = "browser-key"
# A threshold of 0 on the predictive entropy: every MC prediction of this sentiment model abstains.
ALWAYS_ABSTAIN = {"temperature": 1.0, "mc_samples": 8,
                  "abstain": {"measure": "predictive_entropy", "threshold": 0.0, "target_risk": 0.05}}


def write_reports(artifact: Path) -> None:
    """The report figures training writes, drawn from made-up numbers, into the artifact's reports/."""
    reports = artifact / "reports"
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(400, 2, generator=generator) * 2, dim=-1)
    labels = (torch.rand(400, generator=generator) < probs[:, 1]).long()
    plot_reliability(reports / "reliability.png", {"MC (T = 8) + temperature": probs}, labels)
    coverage = [i / 20 for i in range(1, 21)]
    plot_risk_coverage(reports / "risk_coverage.png",
                       {"predictive entropy": {"coverage": coverage, "risk": [0.02 + 0.1 * c * c for c in coverage]}},
                       target_risk=0.05)
    losses = [0.7 * 0.97**step + 0.05 for step in range(60)]
    plot_training_curves(reports / "training_curves.png", {"losses": losses, "lrs": [1e-4] * 60,
                                                           "evals": [{"step": 30, "accuracy": 0.8},
                                                                     {"step": 60, "accuracy": 0.86}]}, "accuracy")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("browser-artifacts")
    write_reports(make_tiny_sentiment_artifact(root, calibration=ALWAYS_ABSTAIN))
    make_tiny_translation_artifact(root)
    make_tiny_generation_artifact(root)
    with live_server(root, api_key=KEY, mc_samples_cap=16) as live:
        yield live


def open_with_key(browser: Chrome, server: LiveServer) -> None:
    """Load the page and enter the API key; returns once the models are listed."""
    browser.get(server.base + "/")
    visible(browser, "error")  # GET /models answered 401
    browser.find_element(By.ID, "api-key").send_keys(KEY + Keys.ENTER)
    wait(browser, lambda d: len(Select(d.find_element(By.ID, "model")).options) == 3)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid='card-facts']"))


def submit(browser: Chrome, model: str, text: str, mc_samples: int, seed: int) -> Any:
    """Pick `model`, fill the form, press Predict; returns the result element once it is shown."""
    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    wait(browser, lambda d: model in by_test_id(d, "card-facts").text)
    for field, value in (("text", text), ("mc-samples", str(mc_samples)), ("seed", str(seed))):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.execute_script("document.getElementById('result').replaceChildren()")
    browser.find_element(By.ID, "submit").click()

    def shown(driver: Chrome) -> Any:
        if driver.find_element(By.ID, "error").is_displayed():
            pytest.fail(f"the page shows an error: {driver.find_element(By.ID, 'error').text}")
        found = driver.find_elements(By.CSS_SELECTOR, f"[data-testid='result'][data-task='{model}']")
        return found[0] if found else None

    return wait(browser, shown)


def predict(server: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.base}/predict", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def screenshot(browser: Chrome, tmp_path: Path, name: str, readme: bool = False) -> Path:
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path))
    if readme and os.environ.get("SAVE_SCREENSHOTS") == "1":
        shutil.copyfile(path, ROOT / "docs" / "playground.png")
    return path


def test_key_prompt_models_and_model_card_with_report_figures(browser: Chrome, server: LiveServer) -> None:
    browser.get(server.base + "/")
    error = visible(browser, "error")
    assert "401" in error.text and "API key" in error.text
    open_with_key(browser, server)
    options = Select(browser.find_element(By.ID, "model")).options
    assert [o.get_attribute("value") for o in options] == ["sentiment", "translation", "generation"]
    Select(browser.find_element(By.ID, "model")).select_by_value("sentiment")
    figures = wait(browser, lambda d: len(imgs := d.find_elements(By.CSS_SELECTOR, "[data-testid='reports'] img")) == 3
                   and all(d.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs) and imgs)
    assert {f.get_attribute("alt").split(" of ")[0] for f in figures} == {"Reliability diagram", "Risk–coverage curve",
                                                                          "Training curves"}
    assert "predictive_entropy > 0" in by_test_id(browser, "card-facts").text


def test_sentiment_label_bars_uncertainty_and_abstain(browser: Chrome, server: LiveServer, tmp_path: Path) -> None:
    open_with_key(browser, server)
    result = submit(browser, "sentiment", "A quiet, moving film with a wonderful cast.", 0, 7)
    assert by_test_id(result, "label").text in {"negative", "positive"}
    assert len(by_test_id(result, "probabilities").find_elements(By.CSS_SELECTOR, ".track")) == 2
    assert by_test_id(result, "abstain-badge").text == "No uncertainty (T = 0)"  # T = 0 never abstains
    assert not browser.find_element(By.ID, "max-new-tokens").is_displayed()  # decoding options: generation only
    result = submit(browser, "sentiment", "A quiet, moving film with a wonderful cast.", 8, 7)
    badge = by_test_id(result, "abstain-badge")
    assert badge.text.startswith("Abstains") and "abstain" in badge.get_attribute("class")
    rows = by_test_id(result, "uncertainty").find_elements(By.CSS_SELECTOR, ".track")
    assert [r.get_attribute("aria-label").split(":")[0] for r in rows] == [
        "Total (predictive entropy)", "Aleatoric (expected entropy)", "Epistemic (mutual information)"]  # no OOD score
    assert "T = 8 · seed 7" in by_test_id(result, "meta").text
    wait(browser, lambda d: d.execute_script(  # the card's figures, for the picture
        "return [...document.querySelectorAll('[data-testid=reports] img')].every(i => i.naturalWidth > 0)"))
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the whole page in one picture
                            {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        screenshot(browser, tmp_path, "sentiment", readme=True)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_translation_tokens_coloured_with_hover_and_keyboard_numbers(browser: Chrome, server: LiveServer,
                                                                     tmp_path: Path) -> None:
    open_with_key(browser, server)
    text = "In the beginning God created the heavens and the earth."
    result = submit(browser, "translation", text, 4, 3)
    expected = predict(server, {"task": "translation", "text": text, "mc_samples": 4, "seed": 3,
                                "parameters": {"return_tokens": True}})
    tokens = by_test_id(result, "tokens").find_elements(By.CSS_SELECTOR, ".token")
    assert len(tokens) == expected["output_tokens"] > 0
    for measure in ("entropy", "mutual_information"):  # every token readable on its colour, both scales
        browser.find_element(By.CSS_SELECTOR, f"label[for='measure-{measure}']").click()
        for token in tokens:
            background = token.value_of_css_property("background-color")
            assert background != "rgba(0, 0, 0, 0)"
            assert contrast(token.value_of_css_property("color"), background) >= 4.5
    browser.find_element(By.CSS_SELECTOR, "label[for='measure-entropy']").click()
    assert "nats" in by_test_id(result, "legend").text and "Entropy" in by_test_id(result, "legend").text
    ActionChains(browser).move_to_element(tokens[0]).perform()  # hover
    tip = visible(browser, "token-tip")
    assert "entropy" in tip.text and "nats" in tip.text
    browser.execute_script("arguments[0].focus()", tokens[0])
    tokens[0].send_keys(Keys.ARROW_RIGHT)
    assert browser.switch_to.active_element == tokens[1]
    assert f"“{expected['tokens'][1]['token']}”" in browser.find_element(By.ID, "token-tip").text
    browser.find_element(By.CSS_SELECTOR, "label[for='measure-mutual_information']").click()
    assert "Mutual information" in by_test_id(result, "legend").text
    screenshot(browser, tmp_path, "translation")


def test_generation_streams_then_shows_one_coloured_token_per_output_token(browser: Chrome, server: LiveServer,
                                                                           tmp_path: Path) -> None:
    open_with_key(browser, server)
    browser.execute_script("window.__calls = []; const f = window.fetch;"
                           "window.fetch = (url, init) => { window.__calls.push(String(url)); return f(url, init); };")
    Select(browser.find_element(By.ID, "model")).select_by_value("generation")
    wait(browser, lambda d: d.find_element(By.ID, "max-new-tokens").is_displayed())
    prompt = "It is a truth universally acknowledged"
    result = submit(browser, "generation", prompt, 4, 21)
    max_new = int(browser.find_element(By.ID, "max-new-tokens").get_attribute("value"))
    temperature = float(browser.find_element(By.ID, "temperature").get_attribute("value"))
    expected = predict(server, {"task": "generation", "text": prompt, "mc_samples": 4, "seed": 21, "parameters": {
        "return_tokens": True, "max_new_tokens": max_new, "temperature": temperature}})
    tokens = by_test_id(result, "tokens").find_elements(By.CSS_SELECTOR, ".token")
    assert len(tokens) == expected["output_tokens"] > 0
    assert [t.get_attribute("textContent") for t in tokens] == [t["token"] for t in expected["tokens"]]
    assert "/predict/stream" in browser.execute_script("return window.__calls")
    screenshot(browser, tmp_path, "generation")


@pytest.mark.parametrize(("status", "error_type", "shown"), [
    (429, "queue_full", "retry in 3 s"), (503, "not_ready", "not ready"), (504, "timeout", "timeout")])
def test_server_refusals_are_shown_and_the_input_is_kept(browser: Chrome, server: LiveServer, status: int,
                                                         error_type: str, shown: str) -> None:
    open_with_key(browser, server)
    Select(browser.find_element(By.ID, "model")).select_by_value("sentiment")
    wait(browser, lambda d: "sentiment" in by_test_id(d, "card-facts").text)
    browser.execute_script(  # the server's refusal, answered in the page (the real ones are hard to time)
        "const real = window.fetch; window.fetch = (url, init) => String(url).startsWith('/predict') ? "
        "Promise.resolve(new Response(JSON.stringify({error: 'refused for the test', error_type: arguments[1]}), "
        "{status: arguments[0], headers: {'Content-Type': 'application/json', 'Retry-After': '3'}}))"
        " : real(url, init);", status, error_type)
    text = browser.find_element(By.ID, "text")
    text.clear()
    text.send_keys("Keep me after the error.")
    browser.find_element(By.ID, "submit").click()
    error = visible(browser, "error")
    assert error.text.startswith(f"{status} {error_type}: refused for the test") and shown in error.text
    assert text.get_attribute("value") == "Keep me after the error."
    assert browser.find_element(By.ID, "submit").is_enabled()


def test_the_ood_score_and_abstain_reason_are_shown_when_the_server_sends_them(browser: Chrome,
                                                                               server: LiveServer) -> None:
    open_with_key(browser, server)
    Select(browser.find_element(By.ID, "model")).select_by_value("sentiment")
    wait(browser, lambda d: "sentiment" in by_test_id(d, "card-facts").text)
    answer = {"task": "sentiment", "model": {"name": "sentiment", "version": "v"}, "mc_samples": 8, "seed": 1,
              "predictions": [{"label": "positive", "confidence": 0.6, "probabilities": {"negative": 0.4,
                               "positive": 0.6}, "uncertainty": {"predictive_entropy": 0.67, "expected_entropy": 0.6,
                               "mutual_information": 0.07, "variation_ratio": 0.1, "probability_std": 0.05},
                               "abstain": True, "abstain_reason": "out of distribution", "ood_score": 0.83,
                               "input_tokens": 5, "truncated": False}]}
    browser.execute_script(  # a response carrying the future fields
        "const real = window.fetch; window.fetch = (url, init) => String(url).startsWith('/predict') ? "
        "Promise.resolve(new Response(arguments[0], {status: 200, headers: {'Content-Type': 'application/json'}}))"
        " : real(url, init);", json.dumps(answer))
    browser.find_element(By.ID, "text").send_keys("anything")
    browser.find_element(By.ID, "submit").click()
    result = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid='result']"))[0]
    assert by_test_id(result, "abstain-badge").text == "Abstains: out of distribution"
    rows = by_test_id(result, "uncertainty").find_elements(By.CSS_SELECTOR, ".track")
    assert rows[-1].get_attribute("aria-label") == "Out-of-distribution score: 0.830"


def test_a_real_422_is_shown_too(browser: Chrome, server: LiveServer) -> None:
    open_with_key(browser, server)
    Select(browser.find_element(By.ID, "model")).select_by_value("sentiment")
    wait(browser, lambda d: "sentiment" in by_test_id(d, "card-facts").text)
    browser.find_element(By.ID, "text").send_keys("fine")
    browser.execute_script("document.getElementById('mc-samples').value = 99")  # above the cap of 16
    browser.find_element(By.ID, "submit").click()
    error = visible(browser, "error")
    assert error.text.startswith("422 mc_samples_above_cap")


def test_phone_width_accessibility_and_nothing_from_elsewhere(browser: Chrome, server: LiveServer,
                                                              tmp_path: Path) -> None:
    browser.get_log("browser")  # drain what earlier tests logged (their 422 and refusals were on purpose)
    # A phone's viewport (a headless window cannot be narrower than 500 px; the emulated viewport can).
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        open_with_key(browser, server)
        result = submit(browser, "sentiment", "Two hours I will not get back.", 8, 1)
        assert browser.execute_script("return document.documentElement.clientWidth") == 390
        assert browser.execute_script("return document.documentElement.scrollWidth <= "
                                      "document.documentElement.clientWidth")  # no sideways scrolling
        sticking_out = browser.execute_script(  # nothing drawn past the right edge either
            "return [...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > "
            "document.documentElement.clientWidth + 1).map(e => e.outerHTML.slice(0, 80))")
        assert sticking_out == []
        browser.execute_script("arguments[0].scrollIntoView()", result)
        screenshot(browser, tmp_path, "phone")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')].filter(e => e.type !== 'hidden' && "
        "!e.labels.length && !e.getAttribute('aria-label')).map(e => e.id || e.name)")
    assert unlabelled == []
    foreign = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                                     ".filter(n => !n.startsWith(location.origin) && !n.startsWith('blob:'))")
    assert foreign == []
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"
                and "401 (Unauthorized)" not in e["message"]]  # the key prompt's GET /models is expected
    assert problems == []
