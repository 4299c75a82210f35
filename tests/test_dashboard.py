"""The dashboard in a real browser: Debian's chromium, headless, driven by selenium.

A ``tickerd serve`` with still prices (``--tick-rate 0``) and a control plane; the page on
the ops port must show a price set through the control plane, a ban, the heaviest IP and
an armed fault, all arriving over its live channel without a reload. A screenshot is saved
under the test's tmp path (its path is printed) as the test's artifact.

``scripts/test`` installs ``chromium`` and ``chromium-driver`` when they are missing; on a
machine without them (and no root to install them) the test is skipped, saying why.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Server
from tickerd.control import ControlClient

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "dashboard-test-token"
WAIT_S = 15.0

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (scripts/test installs them as root)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1400,1100", f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_dashboard_shows_prices_bans_and_faults_live(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    srv: Server = server("--tick-rate", "0", "--control-port", "0", "--control-token", TOKEN)
    assert srv.ops_url is not None and srv.control_url is not None
    ctl = ControlClient(srv.control_url, TOKEN)
    wait = WebDriverWait(browser, WAIT_S)

    browser.get(srv.ops_url + "/dashboard")  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_element(By.ID, "link").text == "live")
    price_cell = 'tr[data-symbol="BTCUSDT"] td.price'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, price_cell))
    before = browser.find_element(By.CSS_SELECTOR, price_cell).text  # type: ignore[attr-defined]
    rows = browser.find_elements(By.CSS_SELECTOR, "#prices tbody tr")  # type: ignore[attr-defined]
    assert len(rows) == srv.symbols

    # A price set through the control plane appears without a reload.
    new = "12345.60" if before != "12345.60" else "12345.70"
    shown = ctl.call("price.set", symbol="BTCUSDT", price=new)["price"]
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, price_cell).text == shown)
    change = browser.find_element(By.CSS_SELECTOR, 'tr[data-symbol="BTCUSDT"] td.change')  # type: ignore[attr-defined]
    assert change.text.startswith(("+", "-")) and change.text not in ("+0", "-0")

    # A ban, the heaviest IP and an armed fault appear too.
    until = ctl.call("limit.ban", ip="203.0.113.7", ms=600_000)
    ban_row = '#bans tr[data-ip="203.0.113.7"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ban_row))
    assert browser.find_element(By.ID, "bans-count").text == "1"  # type: ignore[attr-defined]
    with srv.connect() as ws:
        for rid in range(3):
            ws.send(json.dumps({"id": rid, "method": "ticker.price", "params": {}}))
            ws.recv()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#clients tr[data-ip="127.0.0.1"]'))
    ctl.call("fault.latency", ms=25)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#faults tbody tr"))
    fault = browser.find_element(By.CSS_SELECTOR, "#faults tbody tr").text  # type: ignore[attr-defined]
    assert "latency" in fault and "all clients" in fault
    feed = browser.find_element(By.CSS_SELECTOR, '#feeds tr[data-feed="synthetic"]').text  # type: ignore[attr-defined]
    assert "up" in feed
    ban_text = browser.find_element(By.CSS_SELECTOR, ban_row).text  # type: ignore[attr-defined]
    assert ban_text.startswith("203.0.113.7 ") and "Z" in ban_text, (ban_text, until)

    # The filter narrows the price table to the symbols that match.
    browser.find_element(By.ID, "filter").send_keys("btc")  # type: ignore[attr-defined]
    visible = [
        r.get_attribute("data-symbol")
        for r in browser.find_elements(By.CSS_SELECTOR, "#prices tbody tr")  # type: ignore[attr-defined]
        if r.is_displayed()
    ]
    assert visible and all("BTC" in symbol for symbol in visible) and "BTCUSDT" in visible

    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
