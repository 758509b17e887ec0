"""Live subscriptions (README: Live subscriptions) against a real daemon in-process and real
PostgreSQL: both query forms, SSE, tokens, row rules, origins, resume, slow clients, and
malformed input."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest

from connector import Connector
from tests.e2e.support import wait_until

SECRET = "a-test-secret-of-enough-length-0123"
TABLES = """
CREATE TABLE users (id serial PRIMARY KEY, name text, plan text);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, amount numeric(10, 2), note text);
"""


def token(sub: Any = "1", *, exp: float | None = None, aud: str = "my-app",
          secret: str = SECRET, **claims: Any) -> str:
    payload = {"aud": aud, "exp": int(exp if exp is not None else time.time() + 600), **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, secret, algorithm="HS256")


def live_config(url: str, **live: Any) -> dict[str, Any]:
    return {
        "postgres": {"dsn": url},
        "capture": {"poll_interval": 0.05},
        "live": {"host": "127.0.0.1", "port": 0, "path": "/live",
                 "tables": ["public.users", "public.orders"],
                 "auth": {"jwt": {"secret": SECRET, "audience": "my-app"}},
                 "rules": [{"table": "public.orders", "where_claims": {"customer_id": "sub"}}],
                 **live},
    }


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    await conn.execute(TABLES)
    yield conn
    await conn.close()


class Live:
    def __init__(self, connector: Connector, session: aiohttp.ClientSession) -> None:
        self.connector = connector
        self.session = session
        assert connector.live is not None
        self.base = f"http://127.0.0.1:{connector.live.port}/live"

    def ws(self, *queries: str, tok: str | None = None, **params: str
           ) -> Any:
        query: list[tuple[str, str]] = [("query", q) for q in queries]
        if tok is not None:
            query.append(("token", tok))
        query += list(params.items())
        return self.session.ws_connect(self.base, params=query)


@pytest.fixture
async def live(database: str, db: asyncpg.Connection) -> AsyncIterator[Live]:
    async with Connector(live_config(database)) as connector, aiohttp.ClientSession() as s:
        yield Live(connector, s)


async def receive(ws: aiohttp.ClientWebSocketResponse, n: int, timeout: float = 10
                  ) -> list[dict[str, Any]]:
    got = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            got.append(json.loads(msg.data))
    return got


async def nothing_more(ws: aiohttp.ClientWebSocketResponse, wait: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        msg = await ws.receive(timeout=wait)
        raise AssertionError(f"unexpected {msg}")


async def test_query_string_and_json_subscriptions(live: Live, db: asyncpg.Connection) -> None:
    async with live.ws("insert:users:plan.eq.pro", "*:orders", tok=token("7")) as ws:
        await ws.send_json({"type": "subscribe", "id": "s1", "table": "public.users",
                            "operations": ["update"], "columns": ["name"]})
        assert await receive(ws, 1) == [{"type": "subscribed", "id": "s1"}]
        await db.execute("INSERT INTO users (name, plan) VALUES ('ada', 'pro'), ('bob', 'free')")
        await db.execute("UPDATE users SET name = 'bobby', plan = 'pro' WHERE name = 'bob'")
        await db.execute("INSERT INTO orders (customer_id, amount) VALUES (7, 12.50), (8, 1)")
        got = await receive(ws, 4)
        # bob's update moved him into q0's rows: an insert for q0, an update for s1
        assert [(m["subscription"], m["event"]["op"]) for m in got] == [
            ("q0", "insert"), ("q0", "insert"), ("s1", "update"), ("q1", "insert")]
        ada, entered, bob, order = (m["event"] for m in got)
        assert ada["new"]["name"] == "ada" and entered["new"]["name"] == "bobby"
        assert entered["old"] is None and "changes" not in entered
        assert bob["new"] == {"id": 2, "name": "bobby"} and bob["changes"] == {
            "name": {"old": "bob", "new": "bobby"}}
        assert order["new"]["customer_id"] == 7 and order["new"]["amount"] == 12.50
        await nothing_more(ws)  # customer 8's order is not for this token
        await ws.send_json({"type": "unsubscribe", "id": "s1"})
        assert await receive(ws, 1) == [{"type": "unsubscribed", "id": "s1"}]


async def test_where_claims_cannot_be_widened(live: Live, db: asyncpg.Connection) -> None:
    async with live.ws(tok=token("1")) as ws:
        await ws.send_json({"type": "subscribe", "id": "all", "table": "orders",
                            "where": {"customer_id": {"in": [1, 2]}}})
        assert await receive(ws, 1) == [{"type": "subscribed", "id": "all"}]
        await db.execute("INSERT INTO orders (customer_id, amount, note) VALUES "
                         "(2, 5, 'theirs'), (1, 3, 'mine')")
        await db.execute("UPDATE orders SET customer_id = 2, note = 'moved' WHERE note = 'mine'")
        await db.execute("UPDATE orders SET customer_id = 1, note = 'given' "
                         "WHERE note = 'theirs'")
        got = [m["event"] for m in await receive(ws, 3)]
        assert [e["op"] for e in got] == ["insert", "delete", "insert"]
        mine, moved, given = got
        assert mine["new"]["note"] == "mine"
        # It left this customer's rows: its old version only, nothing of where it went.
        assert moved["new"] is None and moved["old"]["note"] == "mine" and "changes" not in moved
        assert given["old"] is None and given["new"]["note"] == "given"
        await nothing_more(ws)
    # A token without the claim the rule needs cannot subscribe to the table at all.
    async with live.ws(tok=token(None)) as ws:
        await ws.send_json({"type": "subscribe", "id": "x", "table": "orders"})
        (err,) = await receive(ws, 1)
        assert err == {"type": "error", "id": "x",
                       "message": "table public.orders needs a 'sub' claim in the token"}


@pytest.mark.parametrize(("make", "reason"), [  # made when the test runs: they expire
    (lambda: token(secret="another-secret-of-enough-length-xyz"), "signature does not verify"),
    (lambda: token(aud="other-app"), "another audience"),
    (lambda: token(exp=time.time() - 60), "has expired"),
    (lambda: "not.a.jwt", "not a valid JWT"),
], ids=["signature", "audience", "expired", "garbage"])
async def test_bad_tokens_get_401_before_the_upgrade(live: Live, make: Callable[[], str],
                                                     reason: str) -> None:
    tok = make()
    params = {"token": tok}
    async with live.session.get(live.base, params=params, headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}) as r:
        assert r.status == 401
        assert reason in await r.text()
        assert SECRET not in await r.text()
    # The same token in a first auth message (a browser cannot set headers): close 4401.
    async with live.session.ws_connect(live.base) as ws:
        await ws.send_json({"type": "auth", "token": tok})
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401, msg
        assert reason in (msg.extra or "")


async def test_without_a_token_the_first_message_must_be_auth(live: Live) -> None:
    async with live.session.ws_connect(live.base, params={"query": "*:users"}) as ws:
        await ws.send_json({"type": "subscribe", "id": "s", "table": "users"})
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401, msg
        assert "first message must be auth" in (msg.extra or "")


async def test_the_auth_message_and_a_bearer_header(live: Live, db: asyncpg.Connection) -> None:
    async with live.session.ws_connect(live.base, params={"query": "*:users"}) as ws:
        await ws.send_json({"type": "auth", "token": token("3")})
        await db.execute("INSERT INTO users (name) VALUES ('via auth message')")
        (m,) = await receive(ws, 1)
        assert m["event"]["new"]["name"] == "via auth message"
    async with live.session.ws_connect(live.base, params={"query": "*:users"}, headers={
            "Authorization": f"Bearer {token('3')}"}) as ws:
        await db.execute("INSERT INTO users (name) VALUES ('via header')")
        (m,) = await receive(ws, 1)
        assert m["event"]["new"]["name"] == "via header"


async def test_a_token_expiring_during_the_connection_closes_it(live: Live) -> None:
    async with live.ws("*:users", tok=token(exp=time.time() + 2)) as ws:
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401, msg


async def test_origins(database: str, db: asyncpg.Connection) -> None:
    config = live_config(database, allowed_origins=["https://app.example.com"])
    async with Connector(config) as connector, aiohttp.ClientSession() as s:
        live = Live(connector, s)
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await s.ws_connect(live.base, params={"token": token()},
                               headers={"Origin": "https://evil.example.com"})
        assert err.value.status == 403
        async with s.ws_connect(live.base, params={"token": token(), "query": "*:users"},
                                headers={"Origin": "https://app.example.com"}) as ws:
            await db.execute("INSERT INTO users (name) VALUES ('ok')")
            assert len(await receive(ws, 1)) == 1


async def test_resume_within_and_beyond_the_buffer(database: str,
                                                   db: asyncpg.Connection) -> None:
    config = live_config(database, replay={"events": 5})
    async with Connector(config) as connector, aiohttp.ClientSession() as s:
        live = Live(connector, s)
        tok = token()
        async with live.ws("insert:users", tok=tok) as ws:
            await db.execute("INSERT INTO users (name) VALUES ('a'), ('b')")
            got = await receive(ws, 2)
        last = got[-1]["event"]["id"]
        await db.execute("INSERT INTO users (name) VALUES ('c'), ('d')")  # missed
        async with live.ws("insert:users", tok=tok, since=last) as ws:
            missed = await receive(ws, 2)
            await db.execute("INSERT INTO users (name) VALUES ('e')")
            (live_one,) = await receive(ws, 1)
            await nothing_more(ws)
        assert [m["event"]["new"]["name"] for m in [*missed, live_one]] == ["c", "d", "e"]
        await db.execute("INSERT INTO users (name) SELECT 'n' || g FROM generate_series(1, 10) g")
        await asyncio.sleep(0.5)
        async with live.ws("insert:users", tok=tok, since=last) as ws:  # now too old
            assert await receive(ws, 1) == [{"type": "resync"}]


async def test_a_slow_client_is_closed_while_a_fast_one_gets_everything(
        database: str, db: asyncpg.Connection) -> None:
    config = live_config(database, client_queue=20)
    async with Connector(config) as connector, aiohttp.ClientSession() as s:
        live = Live(connector, s)
        assert connector.live is not None
        stalled = await stalled_websocket(connector.live.port,
                                          f"/live?query=*:users&token={token()}")
        async with live.ws("*:users", tok=token()) as fast:
            await asyncio.sleep(0.3)
            await db.execute("INSERT INTO users (name) SELECT repeat('x', 20000) "
                             "FROM generate_series(1, 400)")
            got = await receive(fast, 400, timeout=30)
            assert len(got) == 400 and all(m["type"] == "event" for m in got)
            # The stalled client is given up (no longer among the clients) within the
            # batch's catch-up time, while the fast one stays.
            await wait_until(lambda: len(connector.live.clients) == 1, 5, "the give-up")
        stalled.close()
        body = connector.metrics.render()[0].decode()
        assert "pgconnector_live_slow_closes_total 1.0" in body
        assert 'pgconnector_live_resyncs_total{reason="slow"} 1.0' in body
        assert 'pgconnector_live_events_sent_total{transport="websocket"}' in body


async def stalled_websocket(port: int, path: str) -> asyncio.StreamWriter:
    """A WebSocket client that completes the handshake and then never reads (a small
    receive buffer, so the server's writes soon block)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    reader._transport.pause_reading()  # type: ignore[attr-defined]  # never read again
    return writer


@pytest.mark.parametrize(("message", "error"), [
    ("{not json", "not valid JSON"),
    ('["a"]', "expected a JSON object"),
    ('{"type": "hello"}', "unknown type 'hello'"),
    ('{"type": "subscribe", "id": "s", "table": "users", "colour": 1}', "unknown field 'colour'"),
    ('{"type": "subscribe", "id": "s"}', "subscribe needs 'table'"),
    ('{"type": "subscribe", "id": "s", "table": "secrets"}',
     "table public.secrets cannot be subscribed"),
    ('{"type": "subscribe", "id": "s", "table": "users", "columns": ["nope"]}',
     "unknown column 'nope'"),
    ('{"type": "subscribe", "id": "s", "table": "users", "where": {"plan": {"like": "x"}}}',
     "unknown operator 'like'"),
    ('{"type": "subscribe", "id": "s", "table": "users", "where": {"nope": 1}}',
     "unknown column 'nope'"),
    ('{"type": "subscribe", "id": "s", "table": "users", "operations": ["merge"]}',
     "operations: expected a list"),
    ('{"type": "unsubscribe", "id": "never"}', "no such subscription"),
    ('{"type": "subscribe", "id": "' + "x" * 65 + '", "table": "users"}', "id: expected"),
])
async def test_malformed_messages_get_one_error_each(live: Live, message: str,
                                                     error: str) -> None:
    async with live.ws(tok=token()) as ws:
        await ws.send_str(message)
        (got,) = await receive(ws, 1)
        assert got["type"] == "error" and error in got["message"], got
        # The connection goes on.
        await ws.send_json({"type": "subscribe", "id": "ok", "table": "users"})
        assert await receive(ws, 1) == [{"type": "subscribed", "id": "ok"}]


async def test_bad_queries_too_many_subscriptions_and_oversized_messages(
        database: str, db: asyncpg.Connection) -> None:
    config = live_config(database, max_subscriptions=2, max_message_bytes=512)
    async with Connector(config) as connector, aiohttp.ClientSession() as s:
        live = Live(connector, s)
        async with live.ws("insert:users:id.eq.", "*:nope", "*:users:plan.gte.x",
                           tok=token()) as ws:
            errors = await receive(ws, 2)
            assert [e["id"] for e in errors] == ["q0", "q1"]
            assert "position" in errors[0]["message"]
            assert "cannot be subscribed" in errors[1]["message"]
            await ws.send_json({"type": "subscribe", "id": "a", "table": "users"})
            assert (await receive(ws, 1))[0]["type"] == "subscribed"
            await ws.send_json({"type": "subscribe", "id": "b", "table": "users"})
            (err,) = await receive(ws, 1)
            assert err["message"] == "at most 2 subscriptions per client"
            await ws.send_str(json.dumps({"type": "subscribe", "id": "c", "table": "x" * 600}))
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.ERROR), msg  # aiohttp: 1009, too big
        # The server is fine: another client subscribes.
        async with live.ws("*:users", tok=token()) as ws:
            await db.execute("INSERT INTO users (name) VALUES ('still here')")
            assert len(await receive(ws, 1)) == 1


async def test_sse_streams_and_resumes(live: Live, db: asyncpg.Connection) -> None:
    url = f"{live.base}/sse"
    headers = {"Authorization": f"Bearer {token('1')}"}
    async with live.session.get(url, params={"query": "*:orders"}, headers=headers) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        await db.execute("INSERT INTO orders (customer_id, amount) VALUES (1, 1), (2, 2), (1, 3)")
        events = await sse_events(r, 2)
    assert [e["data"]["event"]["new"]["amount"] for e in events] == [1, 3]
    assert all(e["id"] == e["data"]["event"]["id"] for e in events)
    await db.execute("INSERT INTO orders (customer_id, amount) VALUES (1, 4)")
    async with live.session.get(url, params={"query": "*:orders"}, headers={
            **headers, "Last-Event-ID": events[0]["id"]}) as r:
        resumed = await sse_events(r, 2)
    assert [e["data"]["event"]["new"]["amount"] for e in resumed] == [3, 4]
    async with live.session.get(url, params={"query": "*:orders"}) as r:
        assert r.status == 401
    async with live.session.get(url, params={"query": "*:nope"}, headers=headers) as r:
        assert r.status == 400 and "cannot be subscribed" in await r.text()


async def sse_events(r: aiohttp.ClientResponse, n: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(10):
        while len(events) < n:
            line = (await r.content.readline()).decode().rstrip("\n")
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and current:
                events.append(current)
                current = {}
    return events


async def test_the_endpoints_share_the_server_listener_on_the_same_port(
        database: str, db: asyncpg.Connection) -> None:
    config = {**live_config(database), "server": {"host": "127.0.0.1", "port": 0}}
    async with Connector(config) as connector, aiohttp.ClientSession() as s:
        assert connector.health is not None and connector.live is not None
        assert not connector.live.own_listener
        base = f"http://127.0.0.1:{connector.health.port}"
        async with s.get(f"{base}/healthz") as r:
            assert r.status == 200
        async with s.ws_connect(f"{base}/live", params={"query": "*:users",
                                                         "token": token()}) as ws:
            await db.execute("INSERT INTO users (name) VALUES ('shared')")
            (m,) = await receive(ws, 1)
            assert m["event"]["new"]["name"] == "shared"
            async with s.get(f"{base}/metrics") as r:
                body = await r.text()
            assert "pgconnector_live_clients 1.0" in body
            assert "pgconnector_live_subscriptions 1.0" in body
        async with s.get(f"{base}/live", params={"token": "bad"}, headers={
                "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}) as r:
            assert r.status == 401
        async with s.get(f"{base}/metrics") as r:
            assert "pgconnector_live_auth_failures_total 1.0" in await r.text()
