"""The live demo page in a real browser (headless Debian chromium through selenium and
chromium-driver; nothing is downloaded): changes made with SQL show in the DOM - a row
appears, a cell changes, a row disappears."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest

from connector import Connector

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver; .ci/run installs them)")


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


async def until(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Poll a (blocking) selenium check in a thread until it returns something true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await asyncio.to_thread(check)
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the page never showed {what}")
        await asyncio.sleep(0.1)


async def test_the_demo_page_follows_the_table(database: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    conn = await asyncpg.connect(database)
    await conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text, qty int)")
    config = {"postgres": {"dsn": database}, "capture": {"poll_interval": 0.05},
              "live": {"port": 0, "tables": ["public.items"], "auth": {"anonymous": True}}}
    try:
        async with Connector(config) as connector:
            assert connector.live is not None
            url = f"http://127.0.0.1:{connector.live.port}/live/demo?table=public.items"
            await asyncio.to_thread(browser.get, url)
            await until(lambda: browser.find_element(By.ID, "status").text == "live",
                        "the live status")

            def cells() -> list[list[str]]:
                # In one script: element by element, a row the page removes meanwhile is a
                # stale element reference (a local CI run failed so).
                rows: list[list[str]] = browser.execute_script(
                    "return Array.from(document.querySelectorAll('#rows tbody tr'), tr => "
                    "Array.from(tr.querySelectorAll('td'), td => td.innerText.trim()))")
                return rows

            await conn.execute("INSERT INTO items (name, qty) VALUES ('apple', 3), ('pear', 5)")
            await until(lambda: cells() == [["1", "apple", "3"], ["2", "pear", "5"]],
                        "the two inserted rows")
            await conn.execute("UPDATE items SET qty = 4 WHERE name = 'apple'")
            await until(lambda: cells() == [["1", "apple", "4"], ["2", "pear", "5"]],
                        "the updated cell")
            await conn.execute("DELETE FROM items WHERE name = 'pear'")
            await until(lambda: cells() == [["1", "apple", "4"]], "the row gone")
            log = await asyncio.to_thread(lambda: browser.find_element(By.ID, "log").text)
            assert "insert public.items" in log and "delete public.items" in log
    finally:
        await conn.close()
