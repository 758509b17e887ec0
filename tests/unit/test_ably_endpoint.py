"""The local Ably endpoint (tests/ably_endpoint.py), exercised with the real ``ably`` SDK."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import warnings
from typing import Any

import httpx
import pytest
from ably import AblyRest
from ably.types.message import Message
from ably.util.exceptions import AblyAuthException, AblyException

from tests.ably_endpoint import AblyEndpoint

EVENT = {"id": "7-1", "op": "insert", "table": "t", "new": {"id": 1, "name": "ä"}, "old": None}


def rest(endpoint: AblyEndpoint, **options: Any) -> AblyRest:
    return AblyRest(key=endpoint.key, **endpoint.client_options(**options))


async def batch(client: AblyRest, body: Any, version: str = "1.2") -> Any:
    return await client.request("POST", "/messages", version, body=body)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
async def test_one_message_and_a_list_are_recorded_with_decoded_data(
        ably_endpoint: AblyEndpoint, binary: bool) -> None:
    async with rest(ably_endpoint, use_binary_protocol=binary) as client:
        channel = client.channels.get("orders:1 two")  # the SDK sends 'orders:1+two'
        result = await channel.publish("insert", EVENT)
        assert len(result.serials) == 1
        await channel.publish(messages=[Message("a", "text"), Message("b", b"\x00\xff"),
                                        Message("c", [1, 2])])
    got = ably_endpoint.messages("orders:1 two")
    assert [(m.name, m.data) for m in got] == [
        ("insert", EVENT), ("a", "text"), ("b", b"\x00\xff"), ("c", [1, 2])]
    assert got[0].encoding == "json" and got[0].raw["data"] != EVENT  # sent as JSON text
    assert got[2].encoding == (None if binary else "base64")
    # the SDK's idempotent publishing gave the list one base: <base>:0, <base>:1, ...
    base = got[1].id.rpartition(":")[0]
    assert [m.id for m in got[1:]] == [f"{base}:{n}" for n in range(3)]
    (first, second) = ably_endpoint.publish_requests()
    assert (first.channels, first.message_count, first.status, first.auth) == (
        ["orders:1 two"], 1, 201, "basic")
    assert second.message_count == 3
    assert ably_endpoint.errors == []


async def test_dict_data_arrives_as_an_object_and_history_reads_it_back(
        ably_endpoint: AblyEndpoint) -> None:
    async with rest(ably_endpoint, use_binary_protocol=False) as client:
        channel = client.channels.get("c")
        await channel.publish("insert", EVENT)
        history = await channel.history()
    (m,) = ably_endpoint.messages("c")
    assert m.data == EVENT and isinstance(m.data, dict)
    assert [(h.name, h.data) for h in history.items] == [("insert", EVENT)]


async def test_a_wrong_key_is_rejected_with_40101(ably_endpoint: AblyEndpoint) -> None:
    wrong = ably_endpoint.key_name + ":not-the-secret"
    async with AblyRest(key=wrong, **ably_endpoint.client_options()) as client:
        with pytest.raises(AblyException) as caught:
            await client.channels.get("c").publish("e", "d")
        response = await batch(client, {"channels": "c", "messages": {"data": "d"}})
    assert isinstance(caught.value, AblyAuthException)  # what AblyException(401, ...) becomes
    assert (caught.value.status_code, caught.value.code) == (401, 40101)
    # request() does not raise: the error is in the response (body, and Ably's headers)
    assert response.status_code == 401 and not response.success
    assert response.items[0]["error"]["code"] == 40101
    assert response.error_code == "40101" and response.error_message
    assert ably_endpoint.messages() == []
    assert [r.status for r in ably_endpoint.requests] == [401, 401]


async def test_token_auth_and_token_renewal(ably_endpoint: AblyEndpoint) -> None:
    async with ably_endpoint.client(token=True) as client:
        await client.channels.get("c").publish("e", "by token")
    async with rest(ably_endpoint) as client:
        # a token error makes a key-holding client get a token and try again
        ably_endpoint.fail_next(401, 40142)
        await client.channels.get("c").publish("e", "after renewal")
    assert ably_endpoint.data("c") == ["by token", "after renewal"]
    assert [(r.path, r.status, r.auth) for r in ably_endpoint.requests] == [
        ("/channels/c/messages", 201, "bearer"),
        ("/channels/c/messages", 401, "basic"),
        (f"/keys/{ably_endpoint.key_name}/requestToken", 200, "none"),
        ("/channels/c/messages", 201, "bearer")]


@pytest.mark.parametrize("ids", [
    ["x:0", "y:1"],  # two bases
    ["x:1", "x:0"],  # out of order
    ["x:0", None],  # one without
    ["x", "x:1"],  # not <base>:<n>
    ["x:0", ""],  # empty
])
async def test_ids_of_a_multi_message_publish_must_be_base_n(
        ably_endpoint: AblyEndpoint, ids: list[str | None]) -> None:
    async with rest(ably_endpoint) as client:
        with pytest.raises(AblyException) as caught:
            await client.channels.get("c").publish(
                messages=[Message("e", str(n), id=i) for n, i in enumerate(ids)])
    assert (caught.value.status_code, caught.value.code) == (400, 40031)
    assert ably_endpoint.messages() == []


async def test_a_single_message_may_have_any_non_empty_id(ably_endpoint: AblyEndpoint) -> None:
    async with rest(ably_endpoint) as client:
        await client.channels.get("c").publish(Message("e", "d", id="no-colon-here"))
        # the SDK leaves an empty id out; request() sends the body as it is
        empty = await client.request("POST", "/channels/c/messages", "5",
                                     body={"data": "d", "id": ""})
    assert [m.id for m in ably_endpoint.messages()] == ["no-colon-here"]
    assert (empty.status_code, empty.error_code) == (400, "40031")


async def test_the_same_id_or_base_twice_is_delivered_once(ably_endpoint: AblyEndpoint) -> None:
    async with rest(ably_endpoint) as client:
        a, b = client.channels.get("a"), client.channels.get("b")
        first = await a.publish(Message("e", "one", id="evt-1"))
        again = await a.publish(Message("e", "one again", id="evt-1"))
        await a.publish(messages=[Message("e", "l0", id="base:0"), Message("e", "l1", id="base:1")])
        await a.publish(messages=[Message("e", "r0", id="base:0"), Message("e", "r1", id="base:1")])
        await b.publish(Message("e", "other channel", id="evt-1"))  # ids are per channel
    assert again.serials == first.serials  # acknowledged as before
    assert ably_endpoint.data("a") == ["one", "l0", "l1"]
    assert ably_endpoint.data("b") == ["other channel"]
    assert [m.data for m in ably_endpoint.duplicates] == ["one again", "r0", "r1"]
    assert [r.duplicate_channels for r in ably_endpoint.publish_requests()] == [
        [], ["a"], [], ["a"], []]


async def test_batch_publish_records_each_channels_messages(ably_endpoint: AblyEndpoint) -> None:
    body = [{"channels": ["x", "y"], "messages": {"name": "e", "data": "to both"}},
            {"channels": "z", "messages": [{"data": "z0", "id": "k:0"},
                                           {"data": '{"a":1}', "encoding": "json", "id": "k:1"}]}]
    async with rest(ably_endpoint) as client:
        response = await batch(client, body)
    assert response.status_code == 201
    assert [(r["channel"], sorted(r)) for r in response.items] == [
        ("x", ["channel", "messageId"]), ("y", ["channel", "messageId"]),
        ("z", ["channel", "messageId"])]
    assert response.items[2]["messageId"] == "k"
    assert ably_endpoint.data("x") == ["to both"] and ably_endpoint.data("y") == ["to both"]
    assert ably_endpoint.data("z") == ["z0", {"a": 1}]
    (req,) = ably_endpoint.requests
    assert (req.channels, req.message_count, req.version) == (["x", "y", "z"], 4, "1.2")


async def test_a_channel_specific_failure_in_a_batch_is_a_40020_partial_failure(
        ably_endpoint: AblyEndpoint) -> None:
    fault = ably_endpoint.fail_next(500, 50000, channel="y")
    body = [{"channels": c, "messages": {"data": c}} for c in ("x", "y", "z")]
    async with rest(ably_endpoint) as client:
        response = await batch(client, body)
        retry = await batch(client, body[1])
    assert response.status_code == 400 and response.error_code == "40020"
    (error_body,) = response.items
    assert error_body["error"]["code"] == 40020 and error_body["error"]["statusCode"] == 400
    results = error_body["batchResponse"]
    assert [r["channel"] for r in results] == ["x", "y", "z"]
    assert "messageId" in results[0] and "messageId" in results[2]
    assert results[1]["error"]["code"] == 50000 and results[1]["error"]["statusCode"] == 500
    assert retry.status_code == 201  # the fault was for one request
    assert ably_endpoint.data() == ["x", "z", "y"]
    assert fault.served == 1 and ably_endpoint.pending_faults == []
    assert ably_endpoint.requests[0].failed_channels == ["y"]


async def test_from_version_2_a_batch_answers_with_batch_results(
        ably_endpoint: AblyEndpoint) -> None:
    ably_endpoint.fail_next(401, 40160, channel="b")
    async with rest(ably_endpoint) as client:
        response = await batch(client, [{"channels": ["a", "b"], "messages": {"data": "1"}},
                                        {"channels": "c", "messages": {"data": "2"}}], "5")
    assert response.status_code == 201  # partial failure included: no 40020 in this form
    first, second = response.items
    assert (first["successCount"], first["failureCount"]) == (1, 1)
    assert first["results"][0]["channel"] == "a" and first["results"][0]["serials"]
    assert first["results"][1] == {"channel": "b", "error": {
        "message": "Action not permitted", "code": 40160, "statusCode": 401,
        "href": "https://help.ably.io/error/40160"}}
    assert (second["successCount"], second["failureCount"]) == (1, 0)


async def test_batch_limits(ably_endpoint: AblyEndpoint) -> None:
    async with rest(ably_endpoint) as client:
        too_many = await batch(client, {"channels": [f"c{n}" for n in range(101)],
                                        "messages": {"data": "d"}})
        spread = await batch(client, [{"channels": f"c{n}", "messages": {"data": "d"}}
                                      for n in range(100)] + [{"channels": "c0",
                                                               "messages": {"data": "e"}}])
        too_big = await batch(client, {"channels": "c", "messages": [
            {"data": "x" * 60_000} for _ in range(36)]})
        spec_too_big = await batch(client, [
            {"channels": "small", "messages": {"data": "fine"}},
            {"channels": "big", "messages": [{"data": "x" * 40_000}, {"data": "y" * 40_000}]}])
    assert (too_many.status_code, too_many.error_code) == (400, "90010")
    assert spread.status_code == 201  # 100 distinct channels, one of them twice
    assert (too_big.status_code, too_big.error_code) == (400, "40009")
    assert spec_too_big.status_code == 400
    assert spec_too_big.items[0]["batchResponse"][1]["error"]["code"] == 40009
    assert ably_endpoint.data("small") == ["fine"] and ably_endpoint.data("big") == []


async def test_messages_over_the_size_limit_are_refused_with_40009(
        ably_endpoint: AblyEndpoint) -> None:
    async with rest(ably_endpoint) as client:
        channel = client.channels.get("c")
        await channel.publish("e", "x" * 65_000)
        with pytest.raises(AblyException) as caught:
            await channel.publish(messages=[Message("e", "x" * 40_000), Message("e", "y" * 40_000)])
    assert (caught.value.status_code, caught.value.code) == (400, 40009)
    assert len(ably_endpoint.messages()) == 1


async def test_an_injected_500_surfaces_as_an_ably_exception(ably_endpoint: AblyEndpoint) -> None:
    fault = ably_endpoint.fail_next(500, 50000, count=2)
    async with rest(ably_endpoint) as client:
        with pytest.raises(AblyException) as caught:
            await client.channels.get("c").publish("e", "d")
        response = await batch(client, {"channels": "c", "messages": {"data": "d"}})
        await client.channels.get("c").publish("e", "third time")
    assert (caught.value.status_code, caught.value.code) == (500, 50000)
    assert response.status_code == 500 and response.items[0]["error"]["code"] == 50000
    assert fault.served == 2
    assert ably_endpoint.data() == ["third time"]
    assert [r.injected for r in ably_endpoint.requests] == [["fail"], ["fail"], []]


async def test_a_rate_limit_error_is_a_429(ably_endpoint: AblyEndpoint) -> None:
    ably_endpoint.fail_next(429, 42910, channel="hot")
    async with rest(ably_endpoint) as client:
        await client.channels.get("cold").publish("e", "d")  # other channels are not affected
        with pytest.raises(AblyException) as caught:
            await client.channels.get("hot").publish("e", "d")
    assert (caught.value.status_code, caught.value.code) == (429, 42910)


async def test_a_delay_past_the_request_timeout_is_an_httpx_timeout(
        ably_endpoint: AblyEndpoint) -> None:
    fault = ably_endpoint.delay_next(2.0)
    async with rest(ably_endpoint, http_request_timeout=0.3) as client:
        channel = client.channels.get("c")
        with pytest.raises(httpx.TimeoutException):  # not wrapped in AblyException
            await channel.publish(Message("e", "d", id="evt-9"))
        # the endpoint delivered it before holding the answer: the retry is a duplicate
        await channel.publish(Message("e", "d", id="evt-9"))
    assert fault.served == 1
    assert ably_endpoint.data() == ["d"] and [m.id for m in ably_endpoint.duplicates] == ["evt-9"]


async def test_a_dropped_connection_is_an_httpx_error(ably_endpoint: AblyEndpoint) -> None:
    ably_endpoint.disconnect_next()
    ably_endpoint.disconnect_next(deliver=True)
    async with rest(ably_endpoint) as client:
        channel = client.channels.get("c")
        with pytest.raises(httpx.RemoteProtocolError):
            await channel.publish("e", "lost")
        with pytest.raises(httpx.RemoteProtocolError):
            await channel.publish("e", "published, answer lost")
        await channel.publish("e", "fine")
    assert ably_endpoint.data() == ["published, answer lost", "fine"]
    assert [r.status for r in ably_endpoint.requests] == [0, 0, 201]


async def test_a_stopped_endpoint_refuses_connections_until_restarted(
        ably_endpoint: AblyEndpoint) -> None:
    port = ably_endpoint.port
    async with rest(ably_endpoint) as client:
        ably_endpoint.stop()
        with pytest.raises(httpx.ConnectError):
            await client.channels.get("c").publish("e", "refused")
        ably_endpoint.start()
        await client.channels.get("c").publish("e", "back")
    assert ably_endpoint.port == port and ably_endpoint.data() == ["back"]


def leaked_sockets() -> list[str]:
    """What the garbage collector finds left unclosed now (its ResourceWarnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_stopping_closes_a_connection_still_in_its_tls_handshake(
        ably_endpoint: AblyEndpoint) -> None:
    """A client that connected just before the stop and has not finished (here: not begun) its
    TLS handshake: the server's side is closed with the stop, not left to the garbage
    collector once the endpoint's loop is gone."""
    with socket.create_connection(("127.0.0.1", ably_endpoint.port), timeout=5) as client:
        time.sleep(0.2)  # accepted, the handshake awaited
        ably_endpoint.stop()
        # Closed by the server (a leak times out here); reset, had it not been accepted yet.
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(1) == b""
    assert leaked_sockets() == []


def test_stopping_ends_a_tls_connection_whose_peer_never_answers(
        ably_endpoint: AblyEndpoint) -> None:
    """A client in the middle of a request that then goes silent (a blackholed network): the
    server's TLS close waits for an answer that never comes; the stop still ends it."""
    tls = ssl.create_default_context(cafile=ably_endpoint.ca_file)
    with socket.create_connection(("127.0.0.1", ably_endpoint.port), timeout=5) as raw, \
            tls.wrap_socket(raw, server_hostname="127.0.0.1") as client:
        client.sendall(b"POST /messages HTTP/1.1\r\nHost: ably\r\nContent-Length: 100\r\n\r\n")
        time.sleep(0.2)  # the request is being read; the rest of it never comes
        ably_endpoint.stop()
        assert leaked_sockets() == []


async def test_per_channel_publish_times(ably_endpoint: AblyEndpoint) -> None:
    async with rest(ably_endpoint) as client:
        for n in range(4):
            await client.channels.get("r").publish(
                messages=[Message("e", f"{n}a"), Message("e", f"{n}b")])
    times = ably_endpoint.publish_times("r")
    assert len(times) == 4 and times == sorted(times)
    assert ably_endpoint.max_rate("r", window=60.0) == pytest.approx(4 / 60)
    assert ably_endpoint.max_rate("r", window=60.0, messages=True) == pytest.approx(8 / 60)
    assert ably_endpoint.publish_times("other") == []


async def test_reset_forgets_everything(ably_endpoint: AblyEndpoint) -> None:
    async with ably_endpoint.client() as client:
        await client.channels.get("c").publish(Message("e", "d", id="i"))
        ably_endpoint.fail_next(500, 50000)
        ably_endpoint.reset()
        await client.channels.get("c").publish(Message("e", "d", id="i"))  # not a repeat now
    assert ably_endpoint.data() == ["d"] and len(ably_endpoint.requests) == 1


def test_a_subprocess_publishes_with_the_env_it_is_given(ably_endpoint: AblyEndpoint) -> None:
    script = textwrap.dedent(f"""
        import asyncio
        from ably import AblyRest

        async def main():
            async with AblyRest(key={ably_endpoint.key!r},
                                **{ably_endpoint.client_options()!r}) as client:
                await client.channels.get("sub").publish("e", {{"from": "child"}})

        asyncio.run(main())
    """)
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    env.update(ably_endpoint.env())
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    assert [m.data for m in ably_endpoint.wait_for_messages(1, "sub", timeout=5)] == [
        {"from": "child"}]


def test_without_the_test_ca_the_sdk_refuses_the_certificate(
        ably_endpoint: AblyEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")

    async def publish() -> None:
        async with rest(ably_endpoint) as client:
            await client.channels.get("c").publish("e", "d")

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(publish())
    assert ably_endpoint.messages() == []


def test_time_and_unknown_routes(ably_endpoint: AblyEndpoint) -> None:
    async def calls() -> tuple[float, Any]:
        async with AblyRest(key=ably_endpoint.key,
                            **ably_endpoint.client_options(endpoint="localhost")) as client:
            return await client.time(), await client.request("GET", "/nothing", "5")

    now, missing = asyncio.run(calls())
    assert now > 1.6e12
    assert (missing.status_code, missing.error_code) == (404, "40400")
