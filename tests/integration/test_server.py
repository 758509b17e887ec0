"""The health server on a real socket, queried with a real HTTP client."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from connector.metrics import Metrics
from connector.server import HealthServer, HealthServerError, Readiness
from connector.testing import RecordingSink, event
from connector.vocabulary import Message


class Probe:
    """A readiness the test sets at will."""

    def __init__(self) -> None:
        self.readiness = Readiness("active", True, {"cache": True, "ably": True})
        self.fail = False

    def __call__(self) -> Readiness:
        if self.fail:
            raise RuntimeError("postgresql://user:s3cret@db/x is unreachable")
        return self.readiness


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def server(metrics: Metrics, probe: Probe) -> AsyncIterator[HealthServer]:
    srv = HealthServer(metrics, probe, host="127.0.0.1", port=0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def http(server: HealthServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        yield session


async def test_healthz(http: aiohttp.ClientSession) -> None:
    async with http.get("/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_ready_when_active_and_everything_up(http: aiohttp.ClientSession) -> None:
    async with http.get("/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "ready": True, "state": "active", "postgres": "connected",
            "publishers": {"cache": "up", "ably": "up"}, "reasons": []}


async def test_not_ready_lists_every_reason(http: aiohttp.ClientSession, probe: Probe) -> None:
    probe.readiness = Readiness("reconnecting", False, {"cache": True, "ably": False})
    async with http.get("/readyz") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["ready"] is False
    assert body["postgres"] == "disconnected"
    assert body["publishers"] == {"cache": "up", "ably": "down"}
    assert body["reasons"] == ["postgres disconnected", "state is reconnecting"]

    probe.readiness = Readiness("active", True, {"cache": True, "ably": False})
    async with http.get("/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["reasons"] == ["publisher ably down"]


async def test_standby_is_ready_without_its_publishers(
        http: aiohttp.ClientSession, probe: Probe) -> None:
    probe.readiness = Readiness("standby", True, {"cache": False})
    async with http.get("/readyz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["ready"] is True and body["state"] == "standby"
    assert body["publishers"] == {"cache": "down"}


@pytest.mark.parametrize("state", ["new", "stopping", "stopped"])
async def test_not_ready_outside_active_and_standby(
        http: aiohttp.ClientSession, probe: Probe, state: str) -> None:
    probe.readiness = Readiness(state, True, {})
    async with http.get("/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["reasons"] == [f"state is {state}"]


async def test_failing_probe_is_not_ready_and_reveals_nothing(
        http: aiohttp.ClientSession, probe: Probe) -> None:
    probe.fail = True
    async with http.get("/readyz") as resp:
        assert resp.status == 503
        text = await resp.text()
    assert "s3cret" not in text and "postgresql" not in text
    assert '"readiness probe failed"' in text


async def test_metrics_endpoint(http: aiohttp.ClientSession, metrics: Metrics) -> None:
    metrics.set_state("active")
    metrics.events_captured("public.users", "update", 3)
    metrics.publish_seconds("cache", 0.004)
    async with http.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == metrics.render()[1]
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    captured = families["pgconnector_events_captured"].samples
    assert [(s.labels, s.value) for s in captured if s.name.endswith("_total")] == [
        ({"table": "public.users", "op": "update"}, 3.0)]
    assert {s.labels["state"]: s.value for s in families["pgconnector_state"].samples}[
        "active"] == 1
    assert families["pgconnector_publish_duration_seconds"].type == "histogram"


@pytest.mark.parametrize("path", ["/", "/health", "/metrics/x", "/readyz/"])
async def test_unknown_paths_are_404(http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(path) as resp:
        assert resp.status == 404


async def test_port_in_use_is_one_clear_line(metrics: Metrics, probe: Probe) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = HealthServer(metrics, probe, host="127.0.0.1", port=port)
        with pytest.raises(HealthServerError) as exc:
            await srv.start()
    message = str(exc.value)
    assert "\n" not in message
    assert message == f"health server cannot listen on 127.0.0.1:{port}: address already in use"
    await srv.stop()  # nothing started: a no-op


async def test_stop_closes_the_port(metrics: Metrics, probe: Probe) -> None:
    srv = HealthServer(metrics, probe, host="127.0.0.1", port=0)
    await srv.start()
    port = srv.port
    assert port != 0
    await srv.stop()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")
    # and it can listen again on the same port
    again = HealthServer(metrics, probe, host="127.0.0.1", port=port)
    await again.start()
    await again.stop()


class Serving(RecordingSink):
    """A sink that serves what it delivered, as a live-subscription sink will."""

    serving = True

    def mount(self, app: web.Application) -> None:
        async def delivered(request: web.Request) -> web.Response:
            return web.json_response(self.positions())

        app.router.add_get(f"/{self.name}/delivered", delivered)


async def test_a_serving_sink_mounts_its_routes_on_the_one_host(
        metrics: Metrics, probe: Probe) -> None:
    sink, plain = Serving("live"), RecordingSink("cache")
    assert not plain.serving
    with pytest.raises(NotImplementedError):
        plain.mount(web.Application())
    await sink.publish([Message("live", "c", "insert", event(7).payload, event(7))])
    srv = HealthServer(metrics, probe, host="127.0.0.1", port=0, mounts=[sink.mount])
    await srv.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{srv.port}") as http:
            async with http.get("/live/delivered") as r:
                assert r.status == 200 and await r.json() == [7]
            async with http.get("/healthz") as r:  # beside the host's own routes
                assert r.status == 200
    finally:
        await srv.stop()
