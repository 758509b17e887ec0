"""Redis: PUBLISH (pubsub mode) or XADD (stream mode), one pipelined round trip per batch."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

from connector.events import Message
from connector.publishers.base import (
    PartialFailure,
    PermanentError,
    Publisher,
    PublishError,
    RetryableError,
)

# Server replies that mean "not now" rather than "never".
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "READONLY", "MASTERDOWN", "CLUSTERDOWN",
                      "OOM", "NOREPLICAS")


class RedisPublisher(Publisher):
    type_name = "redis"

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self.url: str = options.get("url", "redis://127.0.0.1:6379/0")
        self.mode: str = options.get("mode", "pubsub")
        self.maxlen: int | None = options.get("maxlen")
        self.field: str = options.get("field", "event")
        timeout = float(options.get("timeout", 5))
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            self.url, socket_timeout=timeout, socket_connect_timeout=timeout,
            health_check_interval=30)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """What the schema's pattern cannot see: a URL redis-py would refuse at start."""
        url = options.get("url")
        if not isinstance(url, str):
            return []
        try:
            aioredis.Redis.from_url(url)
        except ValueError as exc:
            # redis-py's message may quote the URL: name the problem, never the URL.
            reason = "invalid port" if "port" in str(exc).lower() else "malformed URL"
            return [f".url: {reason}"]
        return []

    async def open(self) -> None:
        try:
            await self._client.ping()
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            raise RetryableError(f"redis unreachable: {_safe(exc)}") from None
        except rexc.AuthenticationError as exc:
            raise PermanentError(f"redis rejected the credentials: {_safe(exc)}") from None

    async def publish(self, messages: Sequence[Message]) -> None:
        pipe = self._client.pipeline(transaction=False)
        if self.mode == "stream":
            for m in messages:
                pipe.xadd(m.channel, {self.field: m.payload, "op": m.name},
                          maxlen=self.maxlen, approximate=True)
        else:
            for m in messages:
                pipe.publish(m.channel, m.payload)
        try:
            results = await pipe.execute(raise_on_error=False)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            raise RetryableError(f"redis: {_safe(exc)}") from None
        failures: dict[int, PublishError] = {}
        for i, result in enumerate(results):
            if isinstance(result, Exception):
                text = _safe(result)
                failures[i] = (RetryableError(f"redis: {text}")
                               if text.startswith(_TRANSIENT_REPLIES) else
                               PermanentError(f"redis: {text}"))
        if failures:
            raise PartialFailure(failures)

    async def close(self) -> None:
        # Closing a broken connection is not an error worth reporting.
        with contextlib.suppress(Exception):
            await self._client.aclose()


def _safe(exc: BaseException) -> str:
    """redis-py's messages name host and port, never the URL's password; keep it that way."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
