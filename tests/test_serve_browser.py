"""The web page in a real browser: headless Chromium types a prompt and sees text stream in."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture
def browser(tmp_path: Path):
    missing = [str(p) for p in (CHROMIUM, DRIVER) if not p.is_file()]
    if missing:
        pytest.skip(f"no browser: {', '.join(missing)} missing (apt-get install chromium "
                    "chromium-driver; .ci/run does)")  # fmt: skip
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(DRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_page_streams_generated_text(browser, server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server[0] + "/")
    browser.find_element(By.ID, "prompt").send_keys("Café ")
    length = browser.find_element(By.ID, "length")
    length.clear()
    length.send_keys("400")
    count_updates = """window.updates = 0; new MutationObserver(() => window.updates++)
        .observe(document.getElementById("output"), {childList: true, subtree: true,
                                                     characterData: true});"""
    browser.execute_script(count_updates)
    browser.find_element(By.ID, "generate").click()
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    text = browser.find_element(By.ID, "generated").get_attribute("textContent")
    assert len(text) == 400
    assert browser.find_element(By.CLASS_NAME, "prompt").get_attribute("textContent") == "Café "
    assert browser.execute_script("return window.updates") > 3  # it arrived chunk by chunk
    assert "400 tokens" in browser.find_element(By.ID, "status").text
    # A bad value is shown as the server's one-line error.
    length.clear()
    length.send_keys("0")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: "length must be in" in d.find_element(By.ID, "status").text)
