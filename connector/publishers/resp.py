"""A minimal Redis connection for the publish hot path: a batch of commands written in one go,
their replies read back in order. Packing and parsing are hiredis's (C).

Written by hand for a measured reason: under py-spy, redis-py's pipeline (packing each
command, reading each reply in Python) was about a quarter of the daemon's drain time. A
one-off micro-benchmark (batches of 1000 PUBLISH, one core) gave 164,000 messages/s for
redis-py and 950,000/s for this; the drain of a 200k backlog to pub/sub went from 40,700 to
53,000 events/s. bench/RESULTS.md's P3 keeps a redis-py pipeline as its reference.
redis-py still parses the URL, so every URL form it accepts means the same here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.connection import parse_url

Reply = Any  # bytes, int, list, None or hiredis.ReplyError (an error reply, returned)
Command = tuple[str | bytes, ...]


class RespError(Exception):
    """The connection failed (refused, reset, timed out, or the server refused AUTH/SELECT).
    The text names host and port, never the URL or a password."""


class RespConnection:
    def __init__(self, url: str, timeout: float) -> None:
        params = parse_url(url)  # type: ignore[no-untyped-call]
        self.path: str | None = params.get("path")
        self.host: str = params.get("host", "localhost")
        self.port: int = int(params.get("port", 6379))
        self.db: int = int(params.get("db", 0) or 0)
        self.username: str | None = params.get("username")
        self.password: str | None = params.get("password")
        self.tls: ssl.SSLContext | None = None
        if url.startswith("rediss://"):
            self.tls = ssl.create_default_context()
            if params.get("ssl_cert_reqs") in ("none", "CERT_NONE"):
                self.tls.check_hostname = False
                self.tls.verify_mode = ssl.CERT_NONE
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def where(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    async def execute(self, commands: Sequence[Command]) -> list[Reply]:
        """Send the commands, return one reply per command (error replies included, as
        hiredis.ReplyError). Connects first if needed; any failure closes the connection and
        raises RespError: what was sent may or may not have been applied."""
        try:
            async with asyncio.timeout(self.timeout):
                if self._writer is None:
                    await self._connect()
                return await self._roundtrip(commands)
        except TimeoutError:
            self.close()
            raise RespError(f"{self.where}: no answer within {self.timeout:g} s") from None
        except (OSError, EOFError, hiredis.ProtocolError) as exc:
            self.close()
            raise RespError(f"{self.where}: {exc.strerror or exc}"
                            if isinstance(exc, OSError) and exc.strerror
                            else f"{self.where}: {type(exc).__name__}: {exc}") from None

    async def _roundtrip(self, commands: Sequence[Command]) -> list[Reply]:
        assert self._reader is not None and self._writer is not None
        pack = hiredis.pack_command
        self._writer.write(b"".join([pack(c) for c in commands]))  # type: ignore[arg-type]
        parser = hiredis.Reader()
        replies: list[Reply] = []
        want = len(commands)
        while len(replies) < want:
            data = await self._reader.read(1 << 16)
            if not data:
                raise EOFError("connection closed by the server")
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                replies.append(reply)
        return replies

    async def _connect(self) -> None:
        if self.path is not None:
            self._reader, self._writer = await asyncio.open_unix_connection(self.path)
        else:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls)
        setup: list[Command] = []
        if self.password is not None:
            setup.append(("AUTH", self.username, self.password) if self.username
                         else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", str(self.db)))
        for cmd, reply in zip(setup, await self._roundtrip(setup) if setup else [], strict=True):
            if isinstance(reply, hiredis.ReplyError):
                self.close()
                what = "rejected the credentials" if cmd[0] == "AUTH" else "refused SELECT"
                # the server's own words, not ours: they never echo the password
                raise RespError(f"{self.where} {what}: {reply}")

    def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
