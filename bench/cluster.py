"""A throwaway PostgreSQL cluster: ``initdb`` into a temporary directory, started on a free
port, removed at the end. The wal measures (bench/wal.py) run on one with wal_level=logical;
the tests use it too (their wal_level=logical cluster, the fault scenarios' restartable
server), so it lives here, where both may import it: bench/ never imports from tests/."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.processes import free_port
from connector.demo import pg_bindir as newest_pg_bindir


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's binaries (pg_config's first; as ``pgconnector demo``
    chooses them)."""
    found = newest_pg_bindir()
    if found is None:
        raise RuntimeError("no PostgreSQL binaries (initdb) installed")
    return Path(found)


class PostgresCluster:
    """``initdb`` into a temporary directory, trust auth, 127.0.0.1 on a free port, the socket in
    that directory. initdb refuses to run as root, so as root everything runs as ``postgres``
    (the directory is chowned to it: pytest's own tmp_path is not reachable by that user)."""

    def __init__(self, *settings: str) -> None:
        self.settings = settings  # extra -c settings, e.g. "wal_level=logical"
        self.bindir = pg_bindir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgconnector-pg-"))
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
