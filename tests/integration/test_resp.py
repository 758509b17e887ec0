"""connector/publishers/resp.py against the real Redis: replies in order (errors included),
SELECT of the URL's database, AUTH refused without the password in the error, and a
connection that recovers after the server closes it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import hiredis
import pytest
import redis.asyncio as aioredis
import trustme

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


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS, with a certificate for localhost from a test CA;
    (its port, the CA's PEM file)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not installed")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
         "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no",
         "--save", "", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        yield port, ca_file
    finally:
        proc.terminate()
        proc.wait(10)


async def test_rediss_verifies_the_server_certificate(
        tls_redis: tuple[int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    port, ca_file = tls_redis
    untrusted = RespConnection(f"rediss://localhost:{port}/0", timeout=5)
    with pytest.raises(RespError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
        await untrusted.execute([("PING",)])
    # ?ssl_cert_reqs=none skips the check (as redis-py does) ...
    unchecked = RespConnection(f"rediss://localhost:{port}/0?ssl_cert_reqs=none", timeout=5)
    assert await unchecked.execute([("PING",)]) == [b"PONG"]
    unchecked.close()
    # ... and a trusted CA passes it.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    trusted = RespConnection(f"rediss://localhost:{port}/0", timeout=5)
    assert await trusted.execute([("PING",)]) == [b"PONG"]
    trusted.close()
