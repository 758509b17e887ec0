"""A PostgreSQL cluster and a Redis server owned by the tests, so they can be stopped, restarted
and cut off without touching the machine's shared servers."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} does not answer on 127.0.0.1:{port} after {timeout}s")
        time.sleep(0.02)


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's binaries (pg_config's first)."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=True).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no PostgreSQL binaries (initdb) installed")
    return Path(initdb).parent


class PostgresCluster:
    """``initdb`` into a temporary directory, trust auth, 127.0.0.1 on a free port, the socket in
    that directory. initdb refuses to run as root, so as root everything runs as ``postgres``
    (the directory is chowned to it: pytest's own tmp_path is not reachable by that user)."""

    def __init__(self, *settings: str) -> None:
        self.settings = settings  # extra -c settings, e.g. "wal_level=logical"
        self.bindir = pg_bindir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgconnector-faults-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self.running = False

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, dbname: str, port: int | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{dbname}"

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run([*self._run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                                 *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def init(self) -> PostgresCluster:
        result = subprocess.run(
            [*self._run_as, str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
             "-A", "trust", "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")
        return self

    def start(self) -> None:
        # A throwaway cluster: no fsync (a fast shutdown still writes everything out).
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c full_page_writes=off "
                   "-c max_connections=60 -c log_min_messages=warning"
                   + "".join(f" -c {setting}" for setting in self.settings))
        self._pg_ctl("-w", "-t", "60", "-l", str(self.logfile), "-o", options, "start")
        self.running = True

    def stop(self) -> None:
        self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")
        self.running = False

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is terminated, the server comes back on the
        same port with the same data."""
        # -l again: without it the new postmaster would write to pg_ctl's stdout, our pipe,
        # and keep it open for good.
        self._pg_ctl("-w", "-t", "60", "-l", str(self.logfile), "-m", "fast", "restart")
        self.running = True

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):
                self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """redis-server on a free port with an append-only file fsynced at every write, so a stream
    survives ``stop()``/``start()`` (same port, same data)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgconnector-faults-redis-"))
        self.logfile = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir),
             "--logfile", str(self.logfile), "--protected-mode", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port, 15, "redis-server")
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM: Redis flushes the append-only file and exits."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
