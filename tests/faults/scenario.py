"""What every fault scenario does around its fault: a config streaming ``public.items`` to a
Redis stream, the writer, the stream reader, and the final reckoning against the table."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from connector.readers.trigger import PIPELINE_BATCHES
from tests.e2e.support import Daemon, make_config, run, wait_until, write_config
from tests.faults.checker import Analysis, ScenarioReport, StreamReader, analyse
from tests.faults.servers import RedisServer
from tests.faults.writer import Writer, committed_changes

MakeDaemon = Callable[..., Daemon]


def rss_kb(pid: int) -> int:
    """The process's resident set (VmRSS), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def count_events(daemon: Daemon, event: str) -> int:
    return daemon.events(strict=False).count(event)


def log_tail(daemon: Daemon, lines: int = 25) -> str:
    return "\n".join(daemon.stderr().splitlines()[-lines:])


class Harness:
    """One scenario's moving parts. ``key`` is the stream (the route's channel)."""

    def __init__(self, *, url: str, redis: RedisServer, workdir: Path, daemons: MakeDaemon,
                 report: ScenarioReport, key: str) -> None:
        self.url = url
        self.redis = redis
        self.workdir = workdir
        self.daemons = daemons
        self.report = report
        self.key = key
        self.reader = StreamReader(redis.url, key)
        self.writer: Writer | None = None

    def config(self, *, batch_size: int, dsn: str | None = None, name: str = "faults.yaml",
               application_name: str | None = None, **capture: Any) -> Path:
        data = make_config(
            dsn or self.url,
            publishers={"cache": {"type": "redis", "url": self.redis.url, "mode": "stream",
                                  "timeout": 2}},
            routes=[{"table": "public.items", "publisher": "cache", "channel": self.key}],
            capture={"batch_size": batch_size, **capture},
            logging={"format": "json", "level": "info"})
        if application_name is not None:
            data["postgres"]["application_name"] = application_name
        return write_config(self.workdir, data, name)

    async def install(self, config: Path) -> None:
        """Triggers in place before the writer starts: every change it makes is captured."""
        result = await run("install", "-c", config)
        assert result.code == 0, result

    async def daemon(self, config: Path, *, active: bool = True, **kwargs: Any) -> Daemon:
        d = await self.daemons(config, self.workdir, **kwargs).start()
        if active:
            await d.wait_active(timeout=30)
        return d

    def write(self, *, total: int, rate: float, seed: int, **kwargs: Any) -> Writer:
        self.writer = Writer(self.url, total=total, rate=rate, seed=seed, **kwargs).start()
        self.reader.start()
        return self.writer

    async def close(self) -> None:
        """Stop the writer and the reader, whatever state a failed scenario left them in."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.stop(), 10)
        await self.reader.cancel()

    async def finish(self, daemons: Sequence[Daemon], *, faults: int, batch_size: int,
                     timeout: float, on_arrived: Callable[[], object] | None = None
                     ) -> Analysis:
        """Let the writer finish, wait (up to ``timeout``) for every committed change to arrive,
        stop the daemons (SIGTERM), read what is left on the stream, and assert: nothing lost,
        nothing that never committed, per-row order, and duplicates only as re-deliveries of
        at most one claim transaction per fault (PIPELINE_BATCHES batches: the trigger source
        commits that many together while the backlog fills whole batches), with the event id
        of their first copy."""
        assert self.writer is not None
        await self.writer.wait(timeout)
        truth = await committed_changes(self.url)
        missing = {(row, v) for row, version in truth.items() for v in range(1, version + 1)}
        seen = 0

        def all_arrived() -> bool:
            nonlocal seen
            for r in self.reader.received[seen:]:
                missing.discard((r.row, r.version))
            seen = len(self.reader.received)
            return not missing

        started = time.monotonic()
        with contextlib.suppress(AssertionError):  # reported below, with the figures
            await wait_until(all_arrived, timeout, "every committed change on the stream",
                             interval=0.1)
        self.report.figures["drain_s"] = f"{time.monotonic() - started:.1f}"
        if on_arrived is not None:
            on_arrived()
        for d in daemons:
            if d.running:
                code, _ = await d.terminate(timeout=15)
                assert code == 0, f"daemon exited {code} on SIGTERM:\n{log_tail(d)}"
        await self.reader.stop()
        a = analyse(truth, self.reader.received)
        self.report.analysis = a
        logs = "\n".join(f"--- daemon {d.pid}\n{log_tail(d)}" for d in daemons)
        assert a.changes > 0 and a.received > 0, a.summary()
        assert a.updated_rows > 0, "no row was updated: per-row order went unchecked"
        assert not a.lost, f"{a.summary()}; first lost: {a.lost[:10]}\n{logs}"
        assert not a.unexpected, f"{a.summary()}; e.g. {a.unexpected[:10]}"
        assert not a.order_violations, f"{a.summary()}; e.g. {a.order_violations[:10]}"
        assert not a.changed_event_id, f"{a.summary()}; e.g. {a.changed_event_id[:10]}"
        in_flight = batch_size * PIPELINE_BATCHES
        assert a.extra_copies <= faults * in_flight, (
            f"{a.summary()}: more than one claim transaction ({in_flight}) per fault "
            f"({faults})")
        return a


async def daemon_sessions(url: str) -> str:
    """The server's view of the daemons' sessions, one line each (for failure messages)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT a.pid, a.application_name, a.client_port, a.state, "
            "       round(extract(epoch FROM now() - a.state_change)::numeric, 1) AS for_s, "
            "       EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid "
            "               AND l.locktype = 'advisory' AND l.granted) AS holds_lock, "
            "       left(a.query, 50) AS query "
            "FROM pg_stat_activity a "
            "WHERE a.application_name LIKE 'pgconnector%' AND a.datname = current_database() "
            "ORDER BY a.backend_start")
    finally:
        await conn.close()
    return "\n".join(str(dict(r)) for r in rows) or "(none)"


async def expect(predicate: Callable[[], bool], timeout: float, what: str,
                 daemon: Daemon, url: str | None = None, interval: float = 0.1) -> None:
    """``wait_until``, failing with the daemon's log as it is at the timeout (and, given the
    database ``url``, the server's view of the daemons' sessions)."""
    try:
        await wait_until(predicate, timeout, what, interval=interval)
    except AssertionError as exc:
        sessions = "" if url is None else \
            f"\nthe daemons' sessions, as the server sees them:\n{await daemon_sessions(url)}"
        raise AssertionError(f"{exc}; daemon {daemon.pid} log tail:\n{log_tail(daemon)}"
                             f"{sessions}") from None


async def wait_received(reader: StreamReader, count: int, timeout: float, what: str) -> None:
    await wait_until(lambda: reader.count >= count, timeout,
                     f"{what} ({count} messages; got {reader.count})", interval=0.01)


async def sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
