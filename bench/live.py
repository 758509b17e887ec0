"""L - live subscriptions (README: Live subscriptions): the daemon serving WebSocket clients
(bench/live_clients.py, a process of their own) on this machine, trigger source.

* L filtered - ``clients`` clients, each subscribed to 1 % of the rows (``name.eq.k<j>``,
  the writers name rows ``k0``..``k99``), writers at ``rate`` changes/s: each change goes to
  about clients/100 clients. Latency commit → client p50/p99, daemon CPU and RSS.
* L broadcast - 100 changes/s to every client: messages/s delivered and p99.

The outside reference is Supabase Realtime's published benchmark (supabase.com/docs/guides/
realtime/benchmarks, "Broadcast from the database": a 2-6 node cluster on AWS, 80,000 users,
10,000 messages/s, median 46 ms, p99 159 ms); quoted, not measured here.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common import APP_NAME, PAYLOAD, SCHEMA, TABLE, at_most, fmt_num, log
from bench.database import Bench
from bench.machine import wait_until_quiet
from bench.processes import PYTHON, Daemon, free_port
from bench.report import Report, Row

BENCH_DIR = Path(__file__).resolve().parent
TARGET_P99_MS = 50.0
TARGET_RSS_MB = 250.0
SUPABASE = "Supabase Realtime, published (broadcast from DB, 2-6 nodes): 46 / 159"
INSERT = f"""INSERT INTO {TABLE} (name, payload, updated_at)
VALUES ($1, $2::jsonb, clock_timestamp())"""


class Clients:
    def __init__(self, url: str, clients: int, mode: str) -> None:
        self.cmd = [PYTHON, str(BENCH_DIR / "live_clients.py"), "--url", url,
                    "--clients", str(clients), "--mode", mode, "--table", f"public.{TABLE}"]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Clients:
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(self._line(), 180)
        if not line.startswith("ready"):
            raise RuntimeError(f"live clients: {line!r}")
        return self

    async def _line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = (await self.proc.stdout.readline()).decode().strip()
        if not line:
            raise RuntimeError("live clients exited")
        return line

    async def command(self, text: str) -> str | None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{text}\n".encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(self._line(), 30) if text == "report" else None

    async def report(self) -> dict[str, Any]:
        line = await self.command("report")
        assert line is not None and line.startswith("report ")
        result: dict[str, Any] = orjson.loads(line[7:])
        return result

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


async def write(url: str, rate: float, seconds: float) -> int:
    """Single-row inserts at ``rate``/s for ``seconds``, rows named k0..k99 in turn."""
    count = max(1, int(rate * seconds))
    k = max(1, min(20, math.ceil(rate / 200)))
    conns = [await asyncpg.connect(url) for _ in range(k)]
    started = time.perf_counter()

    async def one(j: int) -> None:
        for i in range(j, count, k):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await conns[j].execute(INSERT, f"k{i % 100}", PAYLOAD)

    try:
        await asyncio.gather(*(one(j) for j in range(k)))
    finally:
        for c in conns:
            await c.close()
    return count


async def run_live(bench: Bench, report: Report, workdir: Path) -> None:
    s = report.settings
    clients = 50 if s.smoke else 1_000
    seconds = 1.0 if s.smoke else 10.0
    rate = 200 if s.smoke else 1_000
    port = free_port()
    config = {"postgres": {"dsn": bench.url, "schema": SCHEMA, "application_name": APP_NAME},
              "live": {"port": port, "tables": [f"public.{TABLE}"],
                       "auth": {"anonymous": True}, "client_queue": 10_000},
              "logging": {"level": "info", "format": "json"}}
    await bench.set_capture(True)
    await bench.reset()
    url = f"ws://127.0.0.1:{port}/live"
    daemon = await Daemon(workdir, "live", config).start()
    try:
        for mode, changes_per_s in (("filtered", rate), ("broadcast", 100)):
            group = await Clients(url, clients, mode).start()
            try:
                await wait_until_quiet(report, f"L {mode}")
                await group.command("reset")
                cpu0, t0, peak = daemon.cpu_seconds() or 0.0, time.monotonic(), 0
                writer = asyncio.create_task(write(bench.url, changes_per_s, seconds))
                while not writer.done():
                    peak = max(peak, daemon.rss_kb() or 0)
                    await asyncio.sleep(0.2)
                written = await writer
                took = time.monotonic() - t0
                cpu = ((daemon.cpu_seconds() or 0.0) - cpu0) / took
                expected = written * clients if mode == "broadcast" else sum(
                    len(range(i % 100, clients, 100)) for i in range(written))
                deadline = time.monotonic() + 30
                while (got := await group.report())["count"] < expected and (
                        time.monotonic() < deadline):
                    await asyncio.sleep(0.5)
                delivered_in = time.monotonic() - t0
            finally:
                await group.stop()
            log(f"L {mode}: {got['count']:,}/{expected:,} messages, p50 "
                f"{fmt_num(got['p50'], 1)} ms, p99 {fmt_num(got['p99'], 1)} ms, daemon "
                f"{cpu:.0%} of a core, RSS at most {peak / 1024:.0f} MB")
            add_rows(report, mode, clients, changes_per_s, got, expected, cpu, peak / 1024,
                     delivered_in)
    finally:
        await daemon.stop()


def add_rows(report: Report, mode: str, clients: int, rate: int, got: dict[str, Any],
             expected: int, cpu: float, rss_mb: float, seconds: float) -> None:
    latency = f"{fmt_num(got['p50'], 1)} / {fmt_num(got['p99'], 1)}"
    if mode == "filtered":
        report.add(Row(f"L live: {clients:,} WebSocket clients, each filtered to 1 % of rows, "
                       f"{rate:,} changes/s: latency commit → client p50 / p99 (ms)", latency,
                       SUPABASE, "—",
                       at_most(got["p99"], TARGET_P99_MS, f"p99 ≤ {TARGET_P99_MS:g} ms")))
        report.add(Row("L live: the same, daemon CPU (% of a core) / RSS at most (MB)",
                       f"{cpu * 100:.0f} / {rss_mb:.0f}", "—", "—",
                       at_most(rss_mb, TARGET_RSS_MB, f"RSS ≤ {TARGET_RSS_MB:g} MB")))
    else:
        report.add(Row(f"L live: {rate} changes/s broadcast to all {clients:,} clients: "
                       "messages/s delivered, p99 (ms)",
                       f"{fmt_num(got['count'] / seconds)} / {fmt_num(got['p99'], 1)}",
                       SUPABASE, "—", f"reported ({rate * clients:,}/s asked)"))
    report.details.append(
        f"L live {mode}: {got['count']:,}/{expected:,} messages received, max "
        f"{fmt_num(got['max'], 1)} ms, {got['closed']} client(s) closed; daemon "
        f"{cpu:.0%} of a core, RSS at most {rss_mb:.0f} MB")
