"""The Redis publisher against the conformance suite, in both modes, on the real Redis.

The publisher reaches Redis through a TCP proxy (tests/faults/proxy.py), which the outage hook
cuts, and as an ACL user allowed only the test's channels and keys, so a channel outside them
is one Redis refuses for good (NOPERM). The receiver talks to Redis directly."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from connector.conformance import (
    Kit,
    Message,
    Outage,
    PublisherConformance,
    PublisherFactory,
    Receiver,
    Rejection,
    not_applicable,
)
from connector.publishers.redis import RedisPublisher
from tests.faults.proxy import TcpProxy
from tests.faults.servers import free_port


class PubsubReceiver(Receiver):
    """A pattern subscription to every channel of the test."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self._got: dict[str, list[bytes]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client = aioredis.Redis.from_url(self.url)
        self.pubsub = self.client.pubsub()
        await self.pubsub.psubscribe(f"{self.prefix}*")
        # Subscribed once Redis confirms it: nothing published after that is missed.
        while (await self.pubsub.get_message(timeout=1.0)) is None:
            pass
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        async for msg in self.pubsub.listen():
            if msg["type"] == "pmessage":
                self._got.setdefault(msg["channel"].decode(), []).append(msg["data"])

    async def received(self, channel: str) -> list[bytes]:
        if self._task is not None and self._task.done():
            self._task.result()  # the subscription died: say why
        return list(self._got.get(channel, []))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pubsub.aclose()
        await self.client.aclose()


class StreamReceiver(Receiver):
    """XRANGE of the stream named after the channel; the test's keys are deleted at the end."""

    def __init__(self, url: str, prefix: str, field: str = "event") -> None:
        self.url, self.prefix, self.field = url, prefix, field.encode()

    async def start(self) -> None:
        self.client = aioredis.Redis.from_url(self.url)

    async def received(self, channel: str) -> list[bytes]:
        return [fields[self.field] for _, fields in await self.client.xrange(channel)]

    async def stop(self) -> None:
        keys = [k async for k in self.client.scan_iter(match=f"{self.prefix}*", count=1000)]
        if keys:
            await self.client.delete(*keys)
        await self.client.aclose()


class RedisConformance(PublisherConformance):
    """What both modes share: the proxy, the ACL user, the outages."""

    mode: ClassVar[str]
    # test_checks_fail.py swaps in subclasses with a bug, to see each check catch it
    publisher_class: ClassVar[type[RedisPublisher]] = RedisPublisher
    publisher_options: ClassVar[dict[str, Any]] = {"timeout": 1}
    publish_timeout = 5.0

    @pytest.fixture
    def proxy(self, redis_url: str) -> Iterator[TcpProxy]:
        parts = urlsplit(redis_url)
        proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379).start()
        yield proxy
        proxy.close()

    @pytest.fixture
    async def acl_user(self, redis_url: str, channel_prefix: str
                       ) -> AsyncIterator[tuple[str, str]]:
        """A user allowed every command on the test's channels and keys only."""
        name, password = f"{channel_prefix}-user", uuid.uuid4().hex
        admin = aioredis.Redis.from_url(redis_url)
        try:
            await admin.execute_command("ACL", "SETUSER", name, "on", f">{password}",
                                        f"~{channel_prefix}*", f"&{channel_prefix}*", "+@all")
            yield name, password
        finally:
            await admin.execute_command("ACL", "DELUSER", name)
            await admin.aclose()

    @pytest.fixture
    def make_publisher(self, redis_url: str, proxy: TcpProxy,
                       acl_user: tuple[str, str]) -> PublisherFactory:
        user, password = acl_user
        db = urlsplit(redis_url).path.strip("/") or "0"
        url = f"redis://{user}:{password}@127.0.0.1:{proxy.port}/{db}"
        options = {"url": url, "mode": self.mode, **self.publisher_options}
        return lambda: self.publisher_class("conformance", options)

    @pytest.fixture(params=["down", "silent"])
    def outage(self, request: pytest.FixtureRequest, proxy: TcpProxy) -> Outage:
        """down: connections are reset, the new ones at once (Redis behind the proxy is gone);
        silent: the network drops everything, so only the publisher's timeout ends a wait."""

        @contextlib.asynccontextmanager
        async def cut() -> AsyncIterator[None]:
            if request.param == "down":
                real, proxy.upstream_port = proxy.upstream_port, free_port()
                proxy.reset()
                try:
                    yield
                finally:
                    proxy.upstream_port = real
            else:
                proxy.blackhole()
                try:
                    yield
                finally:
                    proxy.restore()

        return cut

    partial_failure = not_applicable(
        "Redis: a batch is one pipelined round trip of one command (PUBLISH or XADD) per "
        "message, and Redis's temporary refusals (LOADING, BUSY, OOM, READONLY, ...) are "
        "server-wide: they fail every message of the batch alike, never some of them")

    @staticmethod
    def forbidden(kit: Kit) -> contextlib.AbstractAsyncContextManager[Message]:
        """A channel outside the ACL user's patterns: NOPERM."""

        @contextlib.asynccontextmanager
        async def hook() -> AsyncIterator[Message]:
            yield kit.message(f"forbidden-{kit.prefix}")

        return hook()


class TestRedisPubsub(RedisConformance):
    mode = "pubsub"

    @pytest.fixture
    def receiver(self, redis_url: str, channel_prefix: str) -> Receiver:
        return PubsubReceiver(redis_url, channel_prefix)

    @pytest.fixture
    def rejected_message(self) -> Rejection:
        return self.forbidden


class TestRedisStream(RedisConformance):
    mode = "stream"

    @pytest.fixture
    def receiver(self, redis_url: str, channel_prefix: str) -> Receiver:
        return StreamReceiver(redis_url, channel_prefix)

    @pytest.fixture(params=["forbidden", "wrong-type"])
    def rejected_message(self, request: pytest.FixtureRequest, redis_url: str) -> Rejection:
        """forbidden: NOPERM; wrong-type: the stream's key holds a string (WRONGTYPE)."""
        if request.param == "forbidden":
            return self.forbidden

        @contextlib.asynccontextmanager
        async def wrong_type(kit: Kit) -> AsyncIterator[Message]:
            channel = kit.channel("not-a-stream")
            client = aioredis.Redis.from_url(redis_url)
            try:
                await client.set(channel, "a string")
                yield kit.message(channel)
            finally:
                await client.aclose()

        return wrong_type


