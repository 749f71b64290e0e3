"""The status page at / in a real browser: Debian's headless Chromium driven by selenium.

The page is loaded while the plant is still off, so everything after is the
page's own doing: the plant starts, values come and change, the alarm is
raised, and a mark set on the page's `window` shows it was never reloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from conftest import Rig
from live import MARKUP, start_agent, start_plant, wait_for_tags
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from edge_agent.demo.broker import free_port

pytestmark = pytest.mark.broker

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver (make thirdparty)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def cell(browser: webdriver.Chrome, tag: str, column: str) -> str:
    """The text the page shows in a tag's column ("" while it has no such row)."""
    text: str = browser.execute_script(
        "const td = document.querySelector(`tr[data-tag='${arguments[0]}'] td.${arguments[1]}`);"
        "return td === null ? '' : td.textContent;",
        tag,
        column,
    )
    return text


def until(browser: webdriver.Chrome, what: str, check: Callable[[], object]) -> None:
    WebDriverWait(browser, 10, poll_frequency=0.1).until(lambda _: check(), f"waited for {what}")


def test_the_page_updates_itself_shows_the_alarm_and_markup_as_text(
    rig: Rig, browser: webdriver.Chrome
) -> None:
    plc = free_port()
    _, port = start_agent(rig, plc)
    wait_for_tags(port, lambda tags: all(t["quality"] == "comm" for t in tags.values()))
    browser.get(f"http://127.0.0.1:{port}/")
    until(browser, "the page's first fill", lambda: cell(browser, "HZ01.CNT", "quality") == "comm")
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-alarm='HZ01.LT101 H']") == []
    browser.execute_script("window.notReloaded = true;")

    start_plant(rig, plc)
    until(browser, "a value", lambda: cell(browser, "HZ01.CNT", "value").isdigit())
    first = cell(browser, "HZ01.CNT", "value")
    until(browser, "the value to change", lambda: cell(browser, "HZ01.CNT", "value") != first)
    until(
        browser,
        "the H alarm",
        lambda: browser.find_elements(By.CSS_SELECTOR, "tr[data-alarm='HZ01.LT101 H']"),
    )
    assert cell(browser, "HZ01.LT101", "alarms") == "H"
    assert (cell(browser, "HZ01.LT101", "value"), cell(browser, "HZ01.LT101", "quality")) == (
        "16.0",
        "good",
    )

    assert cell(browser, "HZ01.MSG", "value") == repr(MARKUP), "shown as the characters it is"
    assert browser.execute_script("return document.querySelectorAll('tbody script').length") == 0
    assert browser.execute_script("return window.notReloaded === true"), "never reloaded"
