"""stdout: one JSON line per event, for demos, debugging and piping into other tools."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import orjson

from connector.publishers.base import Publisher, RetryableError
from connector.vocabulary import Message


class StdoutPublisher(Publisher):
    type_name = "stdout"

    def __init__(self, name: str, options: Mapping[str, Any],
                 stream: BinaryIO | None = None) -> None:
        super().__init__(name, options)
        self.envelope: bool = self.options["envelope"]  # default from config/schema.json
        self._stream = stream

    async def publish(self, messages: Sequence[Message]) -> None:
        out = self._stream or sys.stdout.buffer
        lines = []
        for m in messages:
            if self.envelope:
                # Splice the event's JSON text in as is: no decode/re-encode per event.
                head = orjson.dumps({"publisher": m.publisher, "channel": m.channel,
                                     "name": m.name})
                lines.append(head[:-1] + b',"event":' + m.payload + b"}\n")
            else:
                lines.append(m.payload + b"\n")
        try:
            out.write(b"".join(lines))
            out.flush()
        except BrokenPipeError as exc:
            raise RetryableError(f"stdout closed: {exc}") from None
