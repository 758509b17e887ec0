from __future__ import annotations

import io

import orjson

from connector.publishers.stdout import StdoutPublisher
from connector.vocabulary import ChangeEvent, Message


async def test_one_json_line_per_event() -> None:
    buf = io.BytesIO()
    payload = b'{"id":"1-1","op":"insert","new":{"a": 1}}'
    e = ChangeEvent(1, "public", "t", "insert", payload)
    message = Message("out", "ch", "insert", payload, e)
    await StdoutPublisher("out", {}, stream=buf).publish([message, message])
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    assert orjson.loads(lines[0]) == {"publisher": "out", "channel": "ch", "name": "insert",
                                      "event": {"id": "1-1", "op": "insert", "new": {"a": 1}}}
    bare = io.BytesIO()
    await StdoutPublisher("out", {"envelope": False}, stream=bare).publish(
        [Message("out", "ch", "insert", payload, e)])
    assert bare.getvalue() == payload + b"\n"
