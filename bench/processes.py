"""The processes a measurement runs beside itself: the daemon (the real ``pgconnector start``),
the Redis subscriber and the reference publisher (bench/subscriber.py, bench/ref_publisher.py),
a throwaway redis-server for the outage, and the idle reference (a bare asyncpg connection)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import orjson

from bench.common import BENCH_DIR, cpu_seconds, rss_kb

PYTHON = sys.executable


def daemon_command() -> list[str]:
    """The ``pgconnector`` console script next to this Python (the project's virtualenv)."""
    exe = Path(sys.executable).parent / "pgconnector"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("pgconnector")
    if found:
        return [found]
    return [PYTHON, "-c", "from connector.cli import main; main()"]


async def _terminate(proc: asyncio.subprocess.Process, timeout: float) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """``pgconnector start --no-install -c <config>`` (the bench installs capture itself, so
    every variant runs the same trigger), its JSON log in a file."""

    def __init__(self, workdir: Path, name: str, config: dict[str, Any],
                 env: dict[str, str] | None = None) -> None:
        self.env = env  # None: this process's
        self.config_path = workdir / f"{name}.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.config_path.chmod(0o600)  # it holds the DSN
        self.log_path = workdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.active_at: float | None = None  # wall time of its consumer_active log line
        self._log: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "daemon not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float = 30.0) -> Self:
        self._log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *daemon_command(), "start", "--no-install", "-c", str(self.config_path),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.log_records():
                if record.get("event") == "consumer_active":
                    self.active_at = log_time(record)
                    return self
            if not self.running:
                break
            await asyncio.sleep(0.02)
        tail = self.log_tail()
        await self.stop()
        raise RuntimeError(f"the daemon did not become active within {timeout:g} s:\n{tail}")

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_bytes().splitlines():
                with contextlib.suppress(ValueError):
                    value = orjson.loads(line)
                    if isinstance(value, dict):
                        records.append(value)
        return records

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def count_events(self, name: str) -> int:
        return sum(1 for r in self.log_records() if r.get("event") == name)

    def rss_kb(self) -> int | None:
        return rss_kb(self.pid) if self.running else None

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid) if self.running else None

    async def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            await _terminate(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def log_time(record: dict[str, Any]) -> float:
    """The wall time of a structlog JSON record (its ISO ``timestamp``), else now."""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return dt.datetime.fromisoformat(str(record["timestamp"])).timestamp()
    return time.time()


# --------------------------------------------------------------------------- subscriber


class Subscriber:
    """bench/subscriber.py: counts (or records) one channel's messages in its own process."""

    def __init__(self, url: str, channel: str, *, record: bool = False,
                 sample: Path | None = None) -> None:
        self.url, self.channel, self.record, self.sample = url, channel, record, sample
        self.proc: asyncio.subprocess.Process | None = None
        self.count = 0
        self.samples: list[tuple[float, int]] = []  # (wall time, count) as reported
        self.first_at: float | None = None
        self.done_at: float | None = None
        self.closed = False
        self._replies: asyncio.Queue[str] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> Self:
        cmd = [PYTHON, str(BENCH_DIR / "subscriber.py"), "--url", self.url,
               "--channel", self.channel]
        if self.record:
            cmd.append("--record")
        if self.sample is not None:
            cmd += ["--sample", str(self.sample)]
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())
        reply = await asyncio.wait_for(self._replies.get(), timeout)
        if not reply.startswith("ready"):
            raise RuntimeError(f"subscriber: {reply}")
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            word, *rest = line.decode().split()
            if word == "count":
                self.count = int(rest[1])
                self.samples.append((float(rest[0]), self.count))
            elif word == "first":
                self.first_at = float(rest[0])
            elif word == "done":
                self.done_at = float(rest[0])
                self.count = max(self.count, int(rest[1]))
                self.samples.append((self.done_at, int(rest[1])))
            elif word == "closed":
                self.closed = True
            else:
                self._replies.put_nowait(" ".join([word, *rest]))
            self._changed.set()
        self.closed = True
        self._changed.set()
        self._replies.put_nowait("exited")

    async def _command(self, text: str, timeout: float = 30.0) -> str:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        return await asyncio.wait_for(self._replies.get(), timeout)

    async def reset(self) -> None:
        await self._command("reset")
        self.count, self.first_at, self.done_at = 0, None, None
        self.samples.clear()

    async def expect(self, count: int) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"expect {count}\n".encode())
        await self.proc.stdin.drain()

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Until ``predicate()`` holds (re-checked on every report), or False after
        ``timeout`` or once the subscriber's connection closed."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.closed or time.monotonic() >= deadline:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(),
                                       max(0.0, deadline - time.monotonic()))
        return True

    async def dump(self, path: Path) -> list[tuple[float, bytes]]:
        """Every message recorded since the last reset, with its receive time."""
        reply = await self._command(f"dump {path}")
        if not reply.startswith("dumped"):
            raise RuntimeError(f"subscriber: {reply}")
        return read_dump(path)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                await _terminate(self.proc, 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def read_dump(path: Path) -> list[tuple[float, bytes]]:
    out = []
    for line in path.read_bytes().splitlines():
        received, _, message = line.partition(b"\t")
        out.append((float(received), message))
    return out


async def reference_publish(url: str, channel: str, mode: str, count: int, sample: Path,
                            batch: int = 1000) -> tuple[float, float]:
    """Run bench/ref_publisher.py; (wall time of its first command, of the last reply)."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, str(BENCH_DIR / "ref_publisher.py"), "--url", url, "--channel", channel,
        "--mode", mode, "--count", str(count), "--batch", str(batch), "--sample", str(sample),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    times = dict(line.split() for line in out.decode().splitlines() if line.strip())
    if proc.returncode != 0 or "start" not in times or "end" not in times:
        raise RuntimeError(f"reference publisher failed ({proc.returncode}): "
                           f"{err.decode(errors='replace')[-800:]}")
    return float(times["start"]), float(times["end"])


# --------------------------------------------------------------------------- redis-server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayRedis:
    """redis-server on a free port, no persistence (``--save ''``), to be stopped and started
    again on the same port: the publisher outage of P5."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = await asyncio.create_subprocess_exec(
            exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no",
            "--logfile", str(self.workdir / "redis-outage.log"),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.returncode is not None:
                    await self.stop()
                    raise RuntimeError("the throwaway redis-server did not start") from None
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """SIGTERM (no persistence: it exits at once), SIGKILL after 10 s."""
        if self.proc is not None:
            await _terminate(self.proc, 10)
        self.proc = None


# --------------------------------------------------------------------------- idle reference


_IDLE_CONNECTION = """
import asyncio, os, sys
import asyncpg

async def main():
    conn = await asyncpg.connect(os.environ["BENCH_URL"],
                                 server_settings={"application_name": "bench-idle-reference"})
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await conn.close()

asyncio.run(main())
"""


class IdleConnection:
    """The idle reference: a Python process holding one asyncpg connection, doing nothing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> Self:
        self.proc = await asyncio.create_subprocess_exec(
            PYTHON, "-c", _IDLE_CONNECTION, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "BENCH_URL": self.url})
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError("the idle reference connection did not start")
        return self

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(b"\n")
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            await _terminate(self.proc, 5)
