"""The connector's one HTTP host: ``/healthz``, ``/readyz``, ``/metrics``, and whatever routes
serving sinks mount on it.

It runs on the connector's own event loop, so ``/healthz`` answering proves the loop is not
stuck. Readiness comes from a probe the connector passes in (a plain function reading its
current state), so this module knows nothing of the connector's internals.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog
from aiohttp import web

from connector.metrics import Metrics

log = structlog.get_logger("pgconnector")

SERVING_STATES = ("active", "standby")


class HealthServerError(Exception):
    """The server could not listen (port in use, address not available, no permission)."""


@dataclass(frozen=True)
class Readiness:
    """A snapshot of what ``/readyz`` reports."""

    state: str
    postgres_connected: bool
    publishers: Mapping[str, bool] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def reasons(self) -> list[str]:
        """What keeps this instance from being ready, one short phrase each; empty: ready."""
        reasons = []
        if not self.postgres_connected:
            reasons.append("postgres disconnected")
        if self.state not in SERVING_STATES:
            reasons.append(f"state is {self.state}")
        if self.state == "active":  # a standby publishes nothing, so its publishers don't count
            reasons += [f"publisher {name} down" for name, up in self.publishers.items() if not up]
        return reasons

    @property
    def ready(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        reasons = self.reasons
        return {
            "ready": not reasons,
            "state": self.state,
            "postgres": "connected" if self.postgres_connected else "disconnected",
            "publishers": {name: "up" if up else "down" for name, up in self.publishers.items()},
            "reasons": reasons,
        }


class HealthServer:
    """``await start()`` listens (``port=0`` picks a free port, see ``.port``);
    ``await stop()`` closes the listener and any open connections."""

    def __init__(self, metrics: Metrics, probe: Callable[[], Readiness], *,
                 host: str = "127.0.0.1", port: int = 9187,
                 mounts: Sequence[Callable[[web.Application], None]] = ()) -> None:
        self.metrics = metrics
        self.probe = probe
        self.mounts = list(mounts)  # serving sinks add their routes (connector/publishers/base.py)
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port listened on: the configured one, or the one picked for ``port=0``."""
        return self._port

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("health server already started")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        for mount in self.mounts:
            mount(app)
        # No access log: a scrape every few seconds would drown the connector's own logs.
        # A short shutdown timeout: every handler answers at once, nothing is worth waiting for.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except OSError as exc:
            await runner.cleanup()
            raise HealthServerError(f"health server cannot listen on {self.address}: "
                                    f"{_os_reason(exc)}") from None
        self._runner = runner
        if self._port == 0:
            self._port = runner.addresses[0][1]
        log.info("health_server_listening", address=self.address)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            body = self.probe().to_json()
        except Exception as exc:  # never echo the error: it may carry a DSN
            log.error("readiness_probe_failed", error_type=type(exc).__name__)
            body = {"ready": False, "state": "unknown", "postgres": "disconnected",
                    "publishers": {}, "reasons": ["readiness probe failed"]}
        return web.json_response(body, status=200 if body["ready"] else 503,
                                 headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    return exc.strerror or str(exc)
