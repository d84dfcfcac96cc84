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


# Each character has one successor: a model trained on it copies it, and a greedy sample is a
# long verbatim span of the training text.
ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"


@pytest.fixture(scope="module")
def copy_url(tmp_path_factory):
    """A run (with its index, for novelty) trained to recite ALPHABET, served from its dir."""
    from conftest import start_server
    from run_fixtures import make_run

    run = make_run(tmp_path_factory.mktemp("copy") / "run", ALPHABET * 40, index=True, steps=150)
    with start_server(run) as (url, _):
        yield url


def test_a_stop_string_ends_the_text_and_copies_are_marked(browser, copy_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(copy_url + "/")
    browser.find_element(By.ID, "prompt").send_keys("abc")
    for name, value in [("temperature", "0"), ("length", "400")]:
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    browser.find_element(By.ID, "stops").send_keys("XYZ")
    browser.find_element(By.ID, "novelty").click()
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "status").text.startswith("done")
    )
    status = browser.find_element(By.ID, "status").text
    text = browser.find_element(By.ID, "generated").get_attribute("textContent")
    assert "stopped: stop" in status
    assert text == ALPHABET[3 : ALPHABET.index("XYZ")]  # the copy, cut before the stop string
    marks = browser.find_elements(By.CSS_SELECTOR, "#generated mark.copied")
    assert [m.get_attribute("textContent") for m in marks] == [text]  # all of it is copied
    report = browser.find_element(By.ID, "novelty-report").text
    assert f"Longest copied span: {len(text)} tokens" in report
    # Without novelty, no marks; the stop reason is the length cap.
    browser.find_element(By.ID, "novelty").click()
    browser.find_element(By.ID, "stops").clear()
    length = browser.find_element(By.ID, "length")
    length.clear()
    length.send_keys("10")
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 60).until(
        lambda d: "stopped: length" in d.find_element(By.ID, "status").text
    )
    assert not browser.find_elements(By.CSS_SELECTOR, "#generated mark")
    assert browser.find_element(By.ID, "generated").get_attribute("textContent") == "defghijklm"
