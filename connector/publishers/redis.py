"""Redis: PUBLISH (pubsub mode) or XADD (stream mode), one pipelined round trip per batch
(connector/publishers/resp.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import hiredis

from connector.publishers.base import (
    PartialFailure,
    PermanentError,
    Publisher,
    PublishError,
    RetryableError,
)
from connector.publishers.resp import Command, RespConnection, RespError
from connector.vocabulary import Message

# Server replies that mean "not now" rather than "never".
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "READONLY", "MASTERDOWN", "CLUSTERDOWN",
                      "OOM", "NOREPLICAS")


class RedisPublisher(Publisher):
    type_name = "redis"

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        o = self.options  # defaults filled in from config/schema.json
        self.url: str = o["url"]
        self.mode: str = o["mode"]
        self.maxlen: int | None = o.get("maxlen")
        self.field: str = o["field"]
        self.timeout = float(o["timeout"])
        self._conn = RespConnection(self.url, self.timeout)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """What the schema's pattern cannot see: a URL that cannot be parsed."""
        url = options.get("url")
        if not isinstance(url, str):
            return []
        try:
            RespConnection(url, 1.0)
        except ValueError as exc:
            # redis-py's message may quote the URL: name the problem, never the URL.
            reason = "invalid port" if "port" in str(exc).lower() else "malformed URL"
            return [f".url: {reason}"]
        return []

    async def open(self) -> None:
        try:
            await self._conn.execute([("PING",)])
        except RespError as exc:
            raise RetryableError(f"redis unreachable: {exc}") from None

    async def publish(self, messages: Sequence[Message]) -> None:
        if self.mode == "stream":
            trim: tuple[str, ...] = () if self.maxlen is None else ("MAXLEN", "~",
                                                                     str(self.maxlen))
            commands: list[Command] = [
                ("XADD", m.channel, *trim, "*", self.field, m.payload, "op", m.name)
                for m in messages]
        else:
            commands = [("PUBLISH", m.channel, m.payload) for m in messages]
        try:
            results = await self._conn.execute(commands)
        except RespError as exc:
            raise RetryableError(f"redis: {exc}") from None
        failures: dict[int, PublishError] = {}
        for i, result in enumerate(results):
            if isinstance(result, hiredis.ReplyError):
                text = str(result)
                failures[i] = (RetryableError(f"redis: {text}")
                               if text.startswith(_TRANSIENT_REPLIES) else
                               PermanentError(f"redis: {text}"))
        if failures:
            raise PartialFailure(failures)

    async def close(self) -> None:
        self._conn.close()
