"""The Ably publisher end to end in-process: real PostgreSQL → Connector → the real ``ably``
SDK → a local HTTPS endpoint speaking Ably's REST protocol (tests/ably_endpoint.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import asyncpg
import pytest

from connector import Connector
from tests.ably_endpoint import AblyEndpoint

TABLE = "CREATE TABLE items (id serial PRIMARY KEY, kind text NOT NULL DEFAULT 'a', body text)"


def ably(endpoint: AblyEndpoint, **options: Any) -> dict[str, Any]:
    return {"type": "ably", "api_key": endpoint.key, "endpoint": endpoint.host,
            "port": endpoint.port, "timeout": 2, **options}


def config(database: str, endpoint: AblyEndpoint, routes: list[dict[str, Any]],
           **options: Any) -> dict[str, Any]:
    return {"postgres": {"dsn": database},
            "capture": {"poll_interval": 0.1},
            "publishers": {"ably": ably(endpoint, **options)},
            "routes": [{"publisher": "ably", **r} for r in routes]}


async def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def outbox_empty(pg: asyncpg.Connection) -> bool:
    return await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 0


async def test_every_operation_reaches_ably_as_the_event_object(
        database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint) -> None:
    await pg.execute(TABLE)
    cfg = config(database, ably_endpoint, [{"table": "items", "channel": "items:{op}"},
                                           {"table": "items", "channel": "item:{id}",
                                            "operations": ["insert", "update"]}])
    async with Connector(cfg):
        await pg.execute("INSERT INTO items (body) VALUES ('x')")
        await pg.execute("UPDATE items SET body = 'y'")
        await pg.execute("DELETE FROM items")
        await pg.execute("TRUNCATE items")
        got = await ably_endpoint.await_messages(6)
    by_channel = {m.channel: m for m in got if m.channel.startswith("items:")}
    assert sorted(by_channel) == ["items:delete", "items:insert", "items:truncate",
                                  "items:update"]
    for op, m in by_channel.items():
        assert m.name == op.split(":")[1]
        assert isinstance(m.data, dict) and m.encoding == "json"  # an object, not a string
        assert m.id == m.data["id"]  # published alone: the Ably id is the event id
        assert m.data["op"] == m.name and m.data["table"] == "items"
    assert by_channel["items:update"].data["changes"] == {"body": {"old": "x", "new": "y"}}
    assert [m.data["op"] for m in ably_endpoint.messages("item:1")] == ["insert", "update"]
    assert all(r.auth == "basic" for r in ably_endpoint.publish_requests())
    assert not ably_endpoint.duplicates and not ably_endpoint.errors


async def test_ten_thousand_changes_take_few_requests(
        database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint,
        capsys: pytest.CaptureFixture[str]) -> None:
    await pg.execute(TABLE)
    cfg = config(database, ably_endpoint, [{"table": "items", "channel": "item:{id}"},
                                           {"table": "items", "channel": "all",
                                            "publisher": "bulk"}])
    cfg["publishers"]["bulk"] = ably(ably_endpoint, channel_rate=0)
    async with Connector(cfg):
        await pg.execute(
            "INSERT INTO items (body) SELECT 'row ' || g FROM generate_series(1, 10000) g")
        got = await ably_endpoint.await_messages(20000, timeout=60)
    assert len(got) == 20000
    requests = ably_endpoint.publish_requests()
    assert all(r.status == 201 for r in requests)
    per_row = [r for r in requests if r.channels != ["all"]]
    one_channel = [r for r in requests if r.channels == ["all"]]
    # per-row channels: up to 100 channels a request; one busy channel: up to 64 KiB a request
    # (about 230 of these ~280-byte events)
    assert len(per_row) <= 10000 / 100 + 10
    assert 10000 / len(one_channel) >= 150
    ids = [m.data["new"]["id"] for m in ably_endpoint.messages("all")]
    assert ids == sorted(ids) == list(range(1, 10001))  # one channel keeps its order
    with capsys.disabled():
        print(f"\n  ably: 20,000 messages in {len(requests)} requests "
              f"({len(per_row)} for 10,000 per-row channels, {len(one_channel)} for one channel; "
              f"{20000 / len(requests):.0f} messages per request)")


async def test_packing_stays_within_the_channel_rate(
        database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint) -> None:
    await pg.execute(TABLE)
    cfg = config(database, ably_endpoint, [{"table": "items", "channel": "feed"}],
                 channel_rate=4, packing={"enabled": True, "max_events": 100, "linger": 0.05})
    async with Connector(cfg):
        await pg.execute("INSERT INTO items (body) SELECT 'x' FROM generate_series(1, 1500) g")
        for _ in range(20):  # and a trickle of single-row commits
            await pg.execute("INSERT INTO items (body) VALUES ('t')")
        await wait_until(lambda: outbox_empty(pg), timeout=30)
    msgs = ably_endpoint.messages("feed")
    assert all(m.name == "batch" and isinstance(m.data, list) for m in msgs)
    events = [e for m in msgs for e in m.data]
    assert [e["new"]["id"] for e in events] == list(range(1, 1521))
    assert len(msgs) < 60  # 1,520 changes in a few dozen Ably messages
    # 4 messages/s with a burst of one: no second sees more than about the rate
    assert ably_endpoint.max_rate("feed", window=2.0, messages=True) <= 4 * 1.25
    assert not ably_endpoint.duplicates


async def test_server_errors_and_timeouts_are_retried_with_growing_waits(
        database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint) -> None:
    await pg.execute(TABLE)
    cfg = config(database, ably_endpoint, [{"table": "items", "channel": "c"}], timeout=0.5)
    async with Connector(cfg):
        ably_endpoint.fail_next(500, 50000, count=3)
        await pg.execute("INSERT INTO items (body) VALUES ('a')")
        assert len(await ably_endpoint.await_messages(1)) == 1
        times = [r.at for r in ably_endpoint.publish_requests()]
        assert len(times) == 4
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps == sorted(gaps), gaps  # each wait at least as long as the one before

        # a response that never comes in time: the same ids are sent again and Ably's
        # idempotency keeps subscribers from seeing them twice
        ably_endpoint.delay_next(1.5, deliver=True)
        await pg.execute("INSERT INTO items (body) VALUES ('b')")
        await wait_until(lambda: outbox_empty(pg))
    assert [m.data["new"]["body"] for m in ably_endpoint.messages("c")] == ["a", "b"]
    assert [m.id for m in ably_endpoint.duplicates] == [ably_endpoint.messages("c")[1].id]


async def test_rate_limited_requests_back_off_and_are_never_dropped(
        database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint) -> None:
    await pg.execute(TABLE)
    cfg = config(database, ably_endpoint, [{"table": "items", "channel": "c"}])
    async with Connector(cfg):
        ably_endpoint.fail_next(429, 42910, count=6)
        await pg.execute("INSERT INTO items (body) VALUES ('a')")
        assert len(await ably_endpoint.await_messages(1, timeout=30)) == 1
        await wait_until(lambda: outbox_empty(pg))
    times = [r.at for r in ably_endpoint.publish_requests()]
    assert len(times) == 7  # six refusals, then delivered: nothing dead-lettered
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times))
    assert await pg.fetchval("SELECT count(*) FROM pgconnector.dead_letters") == 0


@pytest.mark.parametrize(("status", "code"), [(401, 40101), (413, 40009), (403, 40160)])
async def test_refused_messages_are_dead_lettered_and_others_keep_flowing(
        database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint,
        status: int, code: int) -> None:
    await pg.execute(TABLE)
    cfg = config(database, ably_endpoint, [{"table": "items", "channel": "kind:{kind}"}])
    async with Connector(cfg):
        ably_endpoint.fail_next(status, code, channel="kind:bad")
        await pg.execute("INSERT INTO items (kind, body) VALUES ('good', '1'), ('bad', '2'), "
                         "('good', '3')")
        await wait_until(lambda: outbox_empty(pg))
        await pg.execute("INSERT INTO items (kind, body) VALUES ('bad', '4')")
        await wait_until(lambda: outbox_empty(pg))
    assert [m.data["new"]["body"] for m in ably_endpoint.messages("kind:good")] == ["1", "3"]
    assert [m.data["new"]["body"] for m in ably_endpoint.messages("kind:bad")] == ["4"]
    dead = await pg.fetch("SELECT * FROM pgconnector.dead_letters")
    assert len(dead) == 1
    assert dead[0]["channel"] == "kind:bad" and dead[0]["publisher"] == "ably"
    assert f"ably {code} (HTTP {status})" in dead[0]["error"]
    assert ably_endpoint.key.split(":")[1] not in dead[0]["error"]


async def test_oversize_events_dead_letter_or_go_as_references(
        database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint) -> None:
    await pg.execute(TABLE)
    cfg = config(database, ably_endpoint, [{"table": "items", "channel": "plain"},
                                           {"table": "items", "channel": "ref",
                                            "publisher": "ref"}])
    cfg["publishers"]["ref"] = ably(ably_endpoint, oversize="reference")
    async with Connector(cfg):
        await pg.execute("INSERT INTO items (body) VALUES (repeat('x', 100000)), ('small')")
        await wait_until(lambda: outbox_empty(pg))
    assert [m.data["new"]["body"] for m in ably_endpoint.messages("plain")] == ["small"]
    big, small = ably_endpoint.messages("ref")
    assert big.data["oversize"] is True and big.data["key"] == {"id": 1}
    assert "new" not in big.data and big.data["op"] == "insert"
    assert small.data["new"]["body"] == "small"
    dead = await pg.fetch("SELECT channel, error FROM pgconnector.dead_letters")
    assert [(d["channel"], "max_message_size" in d["error"]) for d in dead] == [("plain", True)]


async def test_a_restart_resends_the_in_flight_batch_with_the_same_ids(
        database: str, pg: asyncpg.Connection, ably_endpoint: AblyEndpoint) -> None:
    await pg.execute(TABLE)
    cfg = config(database, ably_endpoint, [{"table": "items", "channel": "c"}], timeout=30)
    # Ably takes the publish but the answer never comes back before the daemon stops.
    ably_endpoint.delay_next(20, deliver=True)
    first = Connector(cfg, shutdown_timeout=0.5)
    await first.start()
    await pg.execute("INSERT INTO items (body) SELECT 'r' || g FROM generate_series(1, 5) g")
    sent = await ably_endpoint.await_messages(5)
    await first.stop()  # the claim rolls back: the five changes stay in the outbox
    assert await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 5
    async with Connector(cfg):
        await wait_until(lambda: outbox_empty(pg))
    assert [m.id for m in ably_endpoint.duplicates] == [m.id for m in sent]
    assert len(ably_endpoint.messages("c")) == 5  # subscribers saw each change once
    ids = [m.id for m in sent]
    base = ids[0].rsplit(":", 1)[0]
    assert ids == [f"{base}:{n}" for n in range(5)] and base.startswith(sent[0].data["id"])
