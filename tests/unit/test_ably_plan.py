"""The Ably publisher's pure part: how a batch becomes units, groups, ids and requests."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from connector.publishers.ably import AblyPublisher, _Bucket
from connector.publishers.base import PermanentError, PublishError, RetryableError
from connector.vocabulary import ChangeEvent, Message

KEY = "app.key:secretvalue"


def message(n: int, channel: str = "c", size: int = 0, op: str = "insert",
            key: tuple[str, ...] = ("id",)) -> Message:
    payload = orjson.dumps({"id": f"7-{n}", "op": op, "schema": "public", "table": "t",
                            "new": {"id": n, "pad": "x" * size}, "old": None,
                            "txid": 7, "commit_time": "2026-11-21T00:00:00Z"})
    return Message("ably", channel, op, payload, ChangeEvent(n, "public", "t", op, payload, key))


def publisher(**options: Any) -> AblyPublisher:
    return AblyPublisher("ably", {"type": "ably", "api_key": KEY, **options})


def plan(p: AblyPublisher, messages: list[Message]) -> tuple[dict[str, Any],
                                                              dict[int, PublishError]]:
    failures: dict[int, PublishError] = {}
    return p._plan(messages, failures), failures


def test_single_message_carries_the_event_id_and_the_event_as_json_data() -> None:
    queues, failures = plan(publisher(), [message(1)])
    assert not failures
    (group,) = queues["c"]
    (wire,) = group.wire()
    assert wire["id"] == "7-1" and wire["name"] == "insert" and wire["encoding"] == "json"
    assert orjson.loads(wire["data"])["new"] == {"id": 1, "pad": ""}


def test_multi_message_publish_ids_share_one_base_with_positional_suffixes() -> None:
    queues, _ = plan(publisher(), [message(n) for n in range(1, 6)])
    (group,) = queues["c"]
    ids = [w["id"] for w in group.wire()]
    base = ids[0].rsplit(":", 1)[0]
    assert ids == [f"{base}:{n}" for n in range(5)]
    assert base.startswith("7-1~") and ":" not in base
    # the same messages give the same ids; a different set of messages a different base
    again, _ = plan(publisher(), [message(n) for n in range(1, 6)])
    assert [w["id"] for w in again["c"][0].wire()] == ids
    more, _ = plan(publisher(), [message(n) for n in range(1, 7)])
    assert more["c"][0].wire()[0]["id"].rsplit(":", 1)[0] != base


def test_groups_respect_message_size_and_the_per_channel_burst() -> None:
    p = publisher(max_message_size=4096, channel_rate=50)  # burst = 10 messages
    queues, _ = plan(p, [message(n, size=1000) for n in range(12)])
    sizes = [len(g.units) for g in queues["c"]]
    assert sum(sizes) == 12 and all(s <= 3 for s in sizes)  # ~1.1 kB each, 4 kB a publish
    queues, _ = plan(p, [message(n) for n in range(25)])
    assert [len(g.units) for g in queues["c"]] == [10, 10, 5]
    unlimited = publisher(channel_rate=0)
    queues, _ = plan(unlimited, [message(n) for n in range(25)])
    assert [len(g.units) for g in queues["c"]] == [25]


def test_channels_keep_their_own_order_and_requests_split_by_channel_count() -> None:
    p = publisher(max_channels_per_request=2)
    msgs = [message(n, channel=f"ch{n % 3}") for n in range(9)]
    queues, _ = plan(p, msgs)
    assert list(queues) == ["ch0", "ch1", "ch2"]
    assert [i for g in queues["ch1"] for i in g.indices] == [1, 4, 7]
    requests = p._requests([q[0] for q in queues.values()])
    assert [[g.channel for g in r] for r in requests] == [["ch0", "ch1"], ["ch2"]]


def test_request_bytes_bound_splits_a_round() -> None:
    p = publisher(max_request_bytes=3000)
    queues, _ = plan(p, [message(n, channel=f"ch{n}", size=1000) for n in range(5)])
    requests = p._requests([q[0] for q in queues.values()])
    assert [len(r) for r in requests] == [2, 2, 1]


def test_packing_puts_consecutive_events_in_one_array_message() -> None:
    p = publisher(packing={"enabled": True, "max_events": 4})
    assert p.linger == pytest.approx(0.02)
    queues, _ = plan(p, [message(n) for n in range(10)])
    units = [u for g in queues["c"] for u in g.units]
    assert [len(u.indices) for u in units] == [4, 4, 2]
    assert all(u.name == "batch" for u in units)
    first = orjson.loads(units[0].data)
    assert [e["id"] for e in first] == ["7-0", "7-1", "7-2", "7-3"]
    assert re.fullmatch(r"7-0~[0-9a-f]{16}", units[0].id)


def test_oversize_event_is_dead_lettered_or_sent_as_a_reference() -> None:
    big = message(2, size=70_000)
    queues, failures = plan(publisher(), [message(1), big, message(3)])
    assert isinstance(failures[1], PermanentError) and "max_message_size" in str(failures[1])
    assert [i for g in queues["c"] for i in g.indices] == [0, 2]

    queues, failures = plan(publisher(oversize="reference"), [big])
    assert not failures
    data = orjson.loads(queues["c"][0].units[0].data)
    assert data["key"] == {"id": 2} and data["oversize"] is True
    assert "new" not in data and data["id"] == "7-2"


def test_message_name_template() -> None:
    queues, _ = plan(publisher(message_name="{table}.{op}"), [message(1, op="update")])
    assert queues["c"][0].wire()[0]["name"] == "t.update"


@pytest.mark.parametrize(("status", "code", "kind"), [
    (500, 50000, RetryableError), (503, 0, RetryableError), (429, 42910, RetryableError),
    (400, 42911, RetryableError), (401, 40101, PermanentError), (401, 40140, PermanentError),
    (403, 40160, PermanentError), (413, 40009, PermanentError), (400, 40010, PermanentError)])
def test_error_classes(status: int, code: int, kind: type[PublishError]) -> None:
    err = publisher()._classify(status, code, f"boom {KEY}")
    assert isinstance(err, kind)
    assert str(code) in str(err) and "secretvalue" not in str(err)
    if status == 429:
        assert isinstance(err, RetryableError) and err.retry_after >= 1.0


def test_bucket_spaces_messages_at_the_rate() -> None:
    bucket = _Bucket(rate=10.0, capacity=2.0, tokens=2.0)
    assert bucket.reserve(2) == 0.0
    assert bucket.reserve(1) == pytest.approx(0.1, abs=0.02)
    assert bucket.reserve(2) == pytest.approx(0.3, abs=0.02)


def test_the_two_messages_of_a_split_key_change_keep_their_own_ids() -> None:
    """One event, published as a delete and an insert on one channel: Ably must not take the
    second for a re-send of the first."""
    m = message(1)
    gone = Message(m.publisher, "c", "delete", m.payload, m.event, "7-1/delete")
    came = Message(m.publisher, "c", "insert", m.payload, m.event, "7-1/insert")
    queues, _ = plan(publisher(channel_rate=1), [gone, came])  # burst 1: published alone
    assert [g.wire()[0]["id"] for g in queues["c"]] == ["7-1/delete", "7-1/insert"]
