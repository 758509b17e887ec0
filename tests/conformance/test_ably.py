"""The Ably publisher against the conformance suite: the real ``ably`` SDK over TLS to the local
Ably-compatible endpoint (tests/ably_endpoint.py), through a TCP proxy the outage hook cuts.
The receiver reads what the endpoint accepted (duplicates it recognised by id are not
delivered, as with Ably)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from typing import ClassVar

import orjson
import pytest

from connector.conformance import (
    Kit,
    Message,
    Outage,
    PartialFault,
    PublisherConformance,
    PublisherFactory,
    Receiver,
    Rejection,
)
from connector.publishers.ably import AblyPublisher
from tests.ably_endpoint import MAX_MESSAGE_SIZE, AblyEndpoint
from tests.faults.proxy import TcpProxy


class EndpointReceiver(Receiver):
    def __init__(self, endpoint: AblyEndpoint) -> None:
        self.endpoint = endpoint

    async def received(self, channel: str) -> list[bytes]:
        assert not self.endpoint.errors, self.endpoint.errors
        # The adapter sends the event as a string with encoding "json": that string is what a
        # subscriber's SDK decodes, so it must be the payload's text exactly.
        return [m.raw["data"].encode() if isinstance(m.raw.get("data"), str)
                else orjson.dumps(m.raw.get("data")) for m in self.endpoint.messages(channel)]


class TestAbly(PublisherConformance):
    publisher_class: ClassVar[type[AblyPublisher]] = AblyPublisher  # see test_checks_fail.py
    publish_timeout = 5.0  # the publisher's timeout is 1 s
    # Ably's limit is 64 KiB per message, counting the name and some overhead.
    large_message_bytes = MAX_MESSAGE_SIZE - 1024

    @pytest.fixture
    def proxy(self, ably_endpoint: AblyEndpoint) -> Iterator[TcpProxy]:
        proxy = TcpProxy(ably_endpoint.host, ably_endpoint.port).start()
        yield proxy
        proxy.close()

    @pytest.fixture
    def make_publisher(self, ably_endpoint: AblyEndpoint, proxy: TcpProxy) -> PublisherFactory:
        options = {"api_key": ably_endpoint.key, "endpoint": "127.0.0.1", "port": proxy.port,
                   "timeout": 1}
        return lambda: self.publisher_class("conformance", options)

    @pytest.fixture
    def receiver(self, ably_endpoint: AblyEndpoint) -> Receiver:
        return EndpointReceiver(ably_endpoint)

    @pytest.fixture(params=["down", "silent"])
    def outage(self, request: pytest.FixtureRequest, ably_endpoint: AblyEndpoint,
               proxy: TcpProxy) -> Outage:
        """down: the endpoint stops listening (connections through the proxy are reset);
        silent: the network drops everything, TLS handshakes and requests hang."""

        @contextlib.asynccontextmanager
        async def cut() -> AsyncIterator[None]:
            if request.param == "down":
                ably_endpoint.stop()
                try:
                    yield
                finally:
                    ably_endpoint.start()
            else:
                proxy.blackhole()
                try:
                    yield
                finally:
                    proxy.restore()

        return cut

    @pytest.fixture(params=["oversize", "forbidden"])
    def rejected_message(self, request: pytest.FixtureRequest,
                         ably_endpoint: AblyEndpoint) -> Rejection:
        """oversize: over Ably's 64 KiB, on a channel with good messages; forbidden: Ably
        answers 403/40160 (capability) for its channel."""

        @contextlib.asynccontextmanager
        async def hook(kit: Kit) -> AsyncIterator[Message]:
            if request.param == "oversize":
                yield kit.message(kit.channel("a"), size=MAX_MESSAGE_SIZE + 1)
                return
            channel = kit.channel("forbidden")
            ably_endpoint.fail_next(403, 40160, count=1000, channel=channel)
            try:
                yield kit.message(channel)
            finally:
                ably_endpoint.clear_faults()

        return hook

    @pytest.fixture(params=["500", "500-legacy-response", "429"])
    def partial_failure(self, request: pytest.FixtureRequest,
                        ably_endpoint: AblyEndpoint) -> PartialFault:
        """One channel of a batch request fails, answered in the batch-results form of API
        version 2+, or in the older 400/40020 batchResponse form; 429 is a rate limit."""
        status, code = (429, 42910) if request.param == "429" else (500, 50000)

        @contextlib.asynccontextmanager
        async def hook(batch: Sequence[Message]) -> AsyncIterator[Collection[int]]:
            channel = batch[1].channel
            version = ably_endpoint.batch_results_from_version
            if request.param.endswith("legacy-response"):
                ably_endpoint.batch_results_from_version = 99
            ably_endpoint.fail_next(status, code, channel=channel)
            try:
                yield {i for i, m in enumerate(batch) if m.channel == channel}
            finally:
                ably_endpoint.batch_results_from_version = version
                ably_endpoint.clear_faults()

        return hook
