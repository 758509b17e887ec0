"""Helpers for the end-to-end tests: the ``pgconnector`` CLI run as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import yaml

PGCONNECTOR = Path(sys.executable).parent / "pgconnector"
REPO_ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("validate", "install", "uninstall", "status", "start", "demo")


def base_env(**overrides: str) -> dict[str, str]:
    """The environment a user would have: no TTY settings, no Python path tricks."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "COLUMNS", "LINES")}
    env.update(overrides)
    return env


def with_password(url: str, password: str, user: str | None = None) -> str:
    """``url`` with ``user:password@`` (trust auth on the test server ignores the password)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user or parts.username or 'postgres')}:{quote(password)}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_dbname(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(dbname)))


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = (parts.hostname or "127.0.0.1") + f":{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def make_config(dsn: str, *, routes: Sequence[Mapping[str, Any]],
                publishers: Mapping[str, Any] | None = None,
                redis_url: str | None = None,
                capture: Mapping[str, Any] | None = None,
                **extra: Any) -> dict[str, Any]:
    if publishers is None:
        publishers = {"cache": {"type": "redis",
                                "url": redis_url or "redis://127.0.0.1:6379/0"}}
    return {
        "postgres": {"dsn": dsn},
        "capture": {"poll_interval": 0.2, "standby_retry": 0.2, **(capture or {})},
        "publishers": dict(publishers),
        "routes": [dict(r) for r in routes],
        **extra,
    }


def write_config(directory: Path, data: Mapping[str, Any] | str,
                 name: str = "pgconnector.yaml") -> Path:
    path = directory / name
    text = data if isinstance(data, str) else yaml.safe_dump(dict(data), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(repr=False)
class Result:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return (f"\n$ {' '.join(self.args)}\nexit {self.code}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


async def run(*args: str | Path, exe: Path = PGCONNECTOR, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, timeout: float = 60.0) -> Result:
    """Run a command to completion (killing it after ``timeout``); never raises on exit codes."""
    argv = [str(exe), *map(str, args)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(env) if env is not None else base_env(), cwd=cwd)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(argv)} did not finish within {timeout}s") from None
    assert proc.returncode is not None
    return Result(argv, proc.returncode, out.decode(errors="replace"),
                  err.decode(errors="replace"))


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float,
                     what: str, interval: float = 0.02) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def schema_exists(dsn: str, schema: str = "pgconnector") -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema))
    finally:
        await conn.close()


class Daemon:
    """``pgconnector start`` in the background; stdout and stderr go to files (not a TTY)."""

    _count = 0

    def __init__(self, config: Path, workdir: Path, *, exe: Path = PGCONNECTOR,
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        Daemon._count += 1
        self.config = config
        self.workdir = workdir
        self.exe = exe
        self.args = list(args)
        self.env = dict(env) if env is not None else base_env()
        self.stdout_path = workdir / f"daemon{Daemon._count}.stdout"
        self.stderr_path = workdir / f"daemon{Daemon._count}.stderr"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Daemon:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                str(self.exe), "start", "-c", str(self.config), *self.args,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self.env,
                cwd=self.workdir)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stdout_lines(self) -> list[str]:
        """Complete lines only (the daemon may be writing the next one)."""
        text = self.stdout()
        return text.splitlines()[: text.count("\n")]

    def log_records(self, strict: bool = True) -> list[dict[str, Any]]:
        """Every complete stderr line, parsed as JSON; ``strict`` fails on a line that is not
        a JSON object, otherwise such lines (a traceback) are skipped."""
        text = self.stderr()
        records = []
        for line in text.splitlines()[: text.count("\n")]:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif strict:
                raise AssertionError(f"stderr line is not a JSON object: {line!r}")
        return records

    def events(self, strict: bool = True) -> list[str]:
        return [r.get("event", "") for r in self.log_records(strict)]

    async def wait_for_log(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for record in self.log_records():
                if record.get("event") == event:
                    return record
            if not self.running:
                code = None if self.proc is None else await self.proc.wait()
                raise AssertionError(f"daemon exited ({code}) before logging {event!r}:\n"
                                     f"{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon did not log {event!r} within {timeout}s:\n"
                                     f"{self.stderr()}")
            await asyncio.sleep(0.02)

    async def wait_active(self, timeout: float = 30.0) -> None:
        await self.wait_for_log("consumer_active", timeout)

    async def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"daemon did not exit within {timeout}s of SIGTERM:\n"
                                 f"{self.stderr()}") from None
        return code, time.monotonic() - started

    async def kill(self) -> None:
        """SIGKILL: no chance to clean up, as on a crash or an OOM kill."""
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()


class LoopbackServer:
    """A fake server on 127.0.0.1 (a free port) for the duration of an ``async with``;
    subclasses speak just enough of a protocol in ``_serve``."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class StuckRedis(LoopbackServer):
    """A fake Redis that answers the connection handshake (PING, CLIENT, ...) but never
    answers PUBLISH: a publish stays in flight for as long as the test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.publishes = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readline()
                if not header:
                    return
                if not header.startswith(b"*"):
                    continue  # inline command: ignore
                args = []
                for _ in range(int(header[1:])):
                    length = int((await reader.readline())[1:])
                    args.append((await reader.readexactly(length + 2))[:-2])
                command = args[0].upper() if args else b""
                if command == b"PUBLISH":
                    self.publishes += 1
                    continue
                writer.write(b"+PONG\r\n" if command == b"PING" else b"+OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def daemon_factory() -> AsyncIterator[Callable[..., Daemon]]:
    """Make ``Daemon``s; any still running on leaving is killed."""
    made: list[Daemon] = []

    def make(config: Path, workdir: Path, **kwargs: Any) -> Daemon:
        d = Daemon(config, workdir, **kwargs)
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            if d.proc is not None:
                await d.kill()
