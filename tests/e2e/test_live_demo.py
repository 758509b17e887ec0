"""``pgconnector demo --live``: the demo table on the live endpoint, changing, the demo
page's URL printed; the page is served and its WebSocket carries the changes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess

import aiohttp

from tests.e2e.support import PGCONNECTOR, base_env


async def test_demo_live_serves_the_page_and_streams_changes(database: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(PGCONNECTOR), "demo", "--live", "--port", "0", "--seconds", "8",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=base_env(DATABASE_URL=database))
    assert proc.stderr is not None  # the demo talks on stderr
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "the demo ended before printing its URL"
                if m := re.search(r"(http://127\.0\.0\.1:\d+)/live/demo\?table=(\S+)", line):
                    base, table = m.groups()
                    break
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/live/demo") as r:
                assert r.status == 200 and r.content_type == "text/html"
                page = await r.text()
            assert "new WebSocket" in page and "innerHTML" not in page
            async with s.ws_connect(f"{base}/live", params={"query": f"*:{table}"}) as ws:
                msg = json.loads((await ws.receive(timeout=10)).data)
            assert msg["type"] == "event" and msg["event"]["table"] == "users"
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        rest = (await proc.stderr.read()).decode()
        assert "cleaned up" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
