"""connector/publishers/resp.py against the real Redis: replies in order (errors included),
SELECT of the URL's database, AUTH refused without the password in the error, and a
connection that recovers after the server closes it."""

from __future__ import annotations

import uuid

import hiredis
import pytest
import redis.asyncio as aioredis

from connector.publishers.resp import RespConnection, RespError
from tests.integration.helpers import free_port


def with_db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


async def test_replies_in_order_with_errors_and_the_urls_database(redis_url: str) -> None:
    key = f"resp-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(with_db(redis_url, 3))
    conn = RespConnection(with_db(redis_url, 3), timeout=5)
    try:
        replies = await conn.execute([("SET", key, "x"), ("XADD", key, "*", "f", b"v"),
                                      ("GET", key), ("PING",)])
        assert replies[0] == b"OK" and replies[2] == b"x" and replies[3] == b"PONG"
        assert isinstance(replies[1], hiredis.ReplyError) and "WRONGTYPE" in str(replies[1])
        assert await client.get(key) == b"x"  # in database 3, as the URL says
    finally:
        conn.close()
        await client.delete(key)
        await client.aclose()


async def test_refused_credentials_never_show_the_password(redis_url: str) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    host = redis_url.split("//", 1)[1].split("/", 1)[0]
    conn = RespConnection(f"redis://nobody:{secret}@{host}/0", timeout=5)
    with pytest.raises(RespError) as exc:
        await conn.execute([("PING",)])
    assert "rejected the credentials" in str(exc.value) and secret not in str(exc.value)


async def test_unreachable_then_reconnects(redis_url: str) -> None:
    conn = RespConnection(f"redis://127.0.0.1:{free_port()}/0", timeout=2)
    with pytest.raises(RespError, match=r"127\.0\.0\.1"):
        await conn.execute([("PING",)])
    live = RespConnection(redis_url, timeout=5)
    try:
        assert await live.execute([("PING",)]) == [b"PONG"]
        client = aioredis.Redis.from_url(redis_url)
        [client_id] = await live.execute([("CLIENT", "ID")])
        await client.execute_command("CLIENT", "KILL", "ID", str(client_id))
        await client.aclose()
        with pytest.raises(RespError):  # the killed connection fails once ...
            await live.execute([("PING",)])
        assert await live.execute([("PING",)]) == [b"PONG"]  # ... then reconnects
    finally:
        live.close()
