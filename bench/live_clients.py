"""Live WebSocket clients in a process of their own, driven by bench/live.py: ``--clients``
connections to the daemon's live endpoint, each with one subscription, recording for every
event the time from the row's ``updated_at`` (the writer's clock before COMMIT) to its
arrival.

Out (stdout, a line each): ``ready <n>`` once every client is subscribed,
``report <json>`` (count, p50, p99, max in ms, closed connections). In (stdin): ``reset``,
``report``, ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time

import aiohttp
import orjson


def query(mode: str, j: int, table: str) -> str:
    if mode == "broadcast":
        return f"insert:{table}"
    return f"insert:{table}:name.eq.k{j % 100}"  # the writers name rows k0..k99: 1 %


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--mode", choices=["filtered", "broadcast"], required=True)
    ap.add_argument("--table", default="public.events_test")
    args = ap.parse_args()
    latencies: list[float] = []
    closed = 0

    async def client(session: aiohttp.ClientSession, j: int, ready: asyncio.Event,
                     gate: asyncio.Semaphore, connected: list[int]) -> None:
        nonlocal closed
        async with gate:
            ws = await session.ws_connect(args.url, params={"query": query(args.mode, j,
                                                                            args.table)},
                                          max_msg_size=0)
        connected[0] += 1
        if connected[0] == args.clients:
            ready.set()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            at = time.time()
            data = orjson.loads(msg.data)
            if data.get("type") == "event":
                written = dt.datetime.fromisoformat(data["event"]["new"]["updated_at"])
                latencies.append((at - written.timestamp()) * 1000)
        closed += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        ready = asyncio.Event()
        gate = asyncio.Semaphore(50)
        connected = [0]
        tasks = [asyncio.create_task(client(session, j, ready, gate, connected))
                 for j in range(args.clients)]
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(0.5)  # the last subscriptions settle
        print(f"ready {args.clients}", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            if line == "reset":
                latencies.clear()
            elif line == "report":
                got = sorted(latencies)
                q = statistics.quantiles(got, n=100) if len(got) > 1 else got * 99
                print("report " + orjson.dumps({
                    "count": len(got), "p50": q[49] if got else None,
                    "p99": q[98] if got else None, "max": got[-1] if got else None,
                    "closed": closed}).decode(), flush=True)
            elif line == "quit":
                break
        for t in tasks:
            t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
