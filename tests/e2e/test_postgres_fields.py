"""``postgres.host/port/user/password/database`` through the real CLI: they reach PostgreSQL,
override the DSN's parts as libpq does, and a refusal is one line without the password."""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from tests.e2e.support import (
    LoopbackServer,
    make_config,
    run,
    schema_exists,
    write_config,
)

EXIT_RUNTIME = 1
# '@', '/', ':' and '%' would each need URL-encoding in a DSN; as a field they need nothing.
SECRET = f"p@ss/w:rd%{uuid.uuid4().hex[:10]}"
ROUTE = {"table": "public.items", "publisher": "cache", "channel": "e2e:{table}:{op}"}


def fields(database: str) -> dict[str, Any]:
    url = urlsplit(database)
    return {"host": url.hostname or "127.0.0.1", "port": url.port or 5432,
            "user": unquote(url.username or "postgres"), "password": SECRET,
            "database": unquote(url.path.lstrip("/"))}


def config_file(tmp_path: Path, postgres: dict[str, Any]) -> Path:
    data = make_config("unused", routes=[ROUTE])
    data["postgres"] = postgres
    return write_config(tmp_path, data)


@pytest.fixture
async def items(pg: asyncpg.Connection) -> None:
    await pg.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text)")


async def test_fields_alone_connect(database: str, items: None, tmp_path: Path) -> None:
    config = config_file(tmp_path, fields(database))
    installed = await run("install", "-c", config, cwd=tmp_path)
    assert installed.code == 0, installed
    assert await schema_exists(database)
    status = await run("status", "-c", config, cwd=tmp_path)
    assert status.code == 0 and "public.items: delete, insert" in status.stdout, status
    for result in (installed, status):
        assert SECRET not in result.stdout + result.stderr


async def test_fields_override_the_dsn_parts(database: str, items: None,
                                             tmp_path: Path) -> None:
    f = fields(database)
    # the DSN names a port nothing listens on and another database; the fields win
    dsn = f"postgresql://nobody@{f['host']}:1/elsewhere"
    config = config_file(tmp_path, {"dsn": dsn, "port": f["port"], "user": f["user"],
                                    "database": f["database"], "password": SECRET})
    result = await run("install", "-c", config, cwd=tmp_path)
    assert result.code == 0, result
    assert await schema_exists(database)


async def test_the_dsn_port_stays_when_only_the_host_is_given(
        database: str, items: None, tmp_path: Path) -> None:
    # libpq: host=... replaces the DSN's host, not its port (asyncpg alone would use 5432)
    f = fields(database)
    dsn = f"postgresql://{f['user']}@nowhere.invalid:1/{f['database']}"
    config = config_file(tmp_path, {"dsn": dsn, "host": f["host"], "password": SECRET,
                                    "connect_timeout": 5})
    result = await run("install", "-c", config, cwd=tmp_path, timeout=30)
    assert result.code == EXIT_RUNTIME, result
    assert len(result.stderr_lines) == 1, result
    assert result.stderr_lines[0].startswith(
        f"error: cannot connect to PostgreSQL at {f['user']}@{f['host']}:1/{f['database']}: "
    ), result
    assert SECRET not in result.stdout + result.stderr
    assert not await schema_exists(database)


@pytest.mark.parametrize("where", [{"port": 1}, {"host": "nowhere.invalid"}])
@pytest.mark.parametrize("command", ["install", "status"])
async def test_unreachable_server_is_one_line_without_the_password(
        where: dict[str, Any], command: str, database: str, tmp_path: Path) -> None:
    config = config_file(tmp_path, {**fields(database), **where, "connect_timeout": 5})
    result = await run(command, "-c", config, cwd=tmp_path, timeout=30)
    assert result.code == EXIT_RUNTIME, result
    assert len(result.stderr_lines) == 1, result
    assert result.stderr_lines[0].startswith("error: cannot connect to PostgreSQL at "), result
    assert SECRET not in result.stdout + result.stderr
    assert "password" not in result.stderr.lower()


class PasswordRefusingServer(LoopbackServer):
    """Speaks just enough of the PostgreSQL protocol to ask for a cleartext password, keep
    it, and refuse it with SQLSTATE 28P01 (the test server trusts everyone, so it cannot)."""

    def __init__(self) -> None:
        super().__init__()
        self.passwords: list[str] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # SSLRequest / GSSENCRequest: "N", then the startup message
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                if struct.unpack("!i", body[:4])[0] in (80877103, 80877104):
                    writer.write(b"N")
                    continue
                break
            writer.write(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            await writer.drain()
            kind = await reader.readexactly(1)
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            payload = await reader.readexactly(length - 4)
            if kind == b"p":
                self.passwords.append(payload.rstrip(b"\0").decode())
            fields = (b"SFATAL\0VFATAL\0C28P01\0"
                      b'Mpassword authentication failed for user "postgres"\0\0')
            writer.write(b"E" + struct.pack("!i", len(fields) + 4) + fields)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def refusing_server() -> AsyncIterator[PasswordRefusingServer]:
    async with PasswordRefusingServer() as server:
        yield server


@pytest.mark.parametrize("command", ["install", "status", "start"])
async def test_wrong_password_is_one_line_without_the_password(
        command: str, refusing_server: PasswordRefusingServer, tmp_path: Path) -> None:
    config = config_file(tmp_path, {"host": "127.0.0.1", "port": refusing_server.port,
                                    "user": "postgres", "password": SECRET, "database": "db",
                                    "connect_timeout": 5})
    result = await run(command, "-c", config, cwd=tmp_path, timeout=30)
    assert refusing_server.passwords and set(refusing_server.passwords) == {SECRET}
    assert result.code == EXIT_RUNTIME, result
    assert result.stderr_lines == [
        f"error: PostgreSQL at postgres@127.0.0.1:{refusing_server.port}/db rejected the "
        'credentials: password authentication failed for user "postgres"'], result
    assert SECRET not in result.stdout + result.stderr
