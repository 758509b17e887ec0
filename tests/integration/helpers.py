from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest


def make_config(dsn: str, redis_url: str, routes: list[dict[str, Any]], *,
                schema: str = "pgconnector", mode: str = "pubsub",
                **capture: Any) -> dict[str, Any]:
    return {
        "postgres": {"dsn": dsn, "schema": schema},
        "capture": {"poll_interval": 0.2, **capture},
        "publishers": {"cache": {"type": "redis", "url": redis_url, "mode": mode}},
        "routes": routes,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[None]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not installed")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", tmp],
                                stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):  # until it accepts connections
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.02)
            yield
        finally:
            proc.terminate()
            proc.wait(10)
