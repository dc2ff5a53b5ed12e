"""The page at / in a real browser (headless Chromium): type, generate, watch text stream, stop,
see errors and the training curves; a screenshot is saved for humans to look at."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve_util import SlowEngine, loaded, make_service, serving, tiny_models  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("chromium and chromedriver are not installed")
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,1400", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(DRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def write_metrics(folder: Path) -> None:
    from gpt2easy.metrics import MetricsLog

    log = MetricsLog(folder, 0)
    avg = None
    for step in range(1, 201):
        loss = 6.0 * 0.993**step + 3.0 + 0.3 * ((step * 7919) % 13) / 13
        avg = loss if avg is None else 0.95 * avg + 0.05 * loss
        lr = 2e-3 * min(1.0, step / 20) * (0.5 + 0.5 * (1 - step / 200))
        log.write(step, loss=loss, avg=avg, lr=lr, tokens_per_sec=1200.0)
        if step % 50 == 0:
            log.write(step, val_loss=loss + 0.4)
    log.close()


def test_the_page(browser, loaded, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    write_metrics(tmp_path)
    engine = SlowEngine(loaded[0], delay=0.04)
    service = make_service(loaded, engine=engine, run_dir=tmp_path)
    find = lambda css: browser.find_element(By.CSS_SELECTOR, css)  # noqa: E731
    with serving(service) as url:
        browser.get(url + "/")
        wait_for(lambda: "tiny" in find("#model").text, what="the model's name")
        assert "parameters" in find("#model").text and "context 64" in find("#model").text
        wait_for(lambda: find("#curves").is_displayed(), what="the training curves")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-loss path")) == 3
        assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-loss circle")) == 4  # validations
        assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-lr path")) == 1

        # Generate with Ctrl+Enter; watch the text grow piece by piece; Stop.
        box = find("#prompt")
        box.send_keys("It was a dark and stormy night")
        find("#max_tokens").clear()
        find("#max_tokens").send_keys("50")
        box.send_keys(Keys.CONTROL, Keys.ENTER)
        lengths = set()
        wait_for(lambda: lengths.add(len(find("#out-text").text)) or len(lengths) >= 4, what="streaming")
        assert find("#out-prompt").text == "It was a dark and stormy night"
        assert not find("#stop").get_attribute("disabled")
        find("#stop").click()
        wait_for(lambda: find("#message").text == "stopped", what="stopped")
        assert find("#generate").is_enabled()
        wait_for(lambda: service.scheduler.busy_since is None, what="the worker to stop")
        assert engine.steps < 50

        # A seeded generation shows exactly the API's text for the same settings.
        find("#max_tokens").clear()
        find("#max_tokens").send_keys("12")
        find("#seed").send_keys("5")
        find("#generate").click()
        wait_for(lambda: find("#message").text.startswith("done"), what="done")
        api = httpx.post(url + "/v1/completions", timeout=60, json={
            "prompt": "It was a dark and stormy night", "max_tokens": 12, "seed": 5, "temperature": 0.8,
            "top_k": 40, "top_p": 1}).json()  # fmt: skip
        shown = browser.execute_script("return document.getElementById('out-text').textContent")
        assert shown == api["choices"][0]["text"]
        assert "tokens in" in find("#stats").text
        assert not find("#keybox").is_displayed()  # no --api_key: no key box
        shot = tmp_path / "serve-page.png"
        browser.save_screenshot(str(shot))

        # A full queue: the page says the server is busy.
        service.scheduler.max_queue = 1
        hold = [threading.Thread(target=httpx.post, args=(url + "/v1/completions",),
                                 kwargs={"json": {"prompt": "Hi", "max_tokens": 50}, "timeout": 120})
                for _ in range(2)]  # fmt: skip
        hold[0].start()
        wait_for(lambda: service.scheduler.busy_since is not None, what="the worker to start")
        hold[1].start()
        wait_for(lambda: service.scheduler.waiting == 1, what="a waiting request")
        find("#generate").click()
        wait_for(lambda: "busy" in find("#message").text, what="the busy message")
        assert "busy" in find("#message").get_attribute("class")
        wait_for(lambda: "busy" in find("#state").text or "generating" in find("#state").text,
                 what="the state pill")  # fmt: skip
        busy_shot = tmp_path / "serve-page-busy.png"
        browser.save_screenshot(str(busy_shot))
        for t in hold:
            t.join()
        service.scheduler.max_queue = 64

        # A bad value is explained, naming the field.
        find("#temperature").clear()
        find("#temperature").send_keys("5")
        find("#generate").click()
        wait_for(lambda: "temperature" in find("#message").text, what="the error message")
        assert "error" in find("#message").get_attribute("class")
    if os.environ.get("GPT2EASY_SCREENSHOTS"):
        folder = Path(os.environ["GPT2EASY_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        for path in (shot, busy_shot):
            shutil.copyfile(path, folder / path.name)
    assert shot.stat().st_size > 10_000
