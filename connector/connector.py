"""The Connector: wires source → router → publishers and owns the lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog

from connector import db
from connector.binding import bind, table_info
from connector.config import coerce
from connector.install import install
from connector.metrics import Metrics
from connector.parking import Drainer
from connector.publishers.base import (
    DeliveryEngine,
    Outcome,
    Parked,
    Publisher,
    PublishError,
)
from connector.publishers.registry import publisher_class
from connector.router import Router
from connector.server import HealthServer, Readiness
from connector.sources.base import Source, SourceDisconnected
from connector.sources.session import HOUSEKEEPING
from connector.sources.trigger import TriggerSource
from connector.sources.wal import WalSource
from connector.vocabulary import Config, Message

log = structlog.get_logger("pgconnector")

MAX_RECONNECT_BACKOFF = 30.0


@dataclass
class Stats:
    events: int = 0
    messages: int = 0
    batches: int = 0
    dead_letters: int = 0
    parked: int = 0
    reconnects: int = 0


class Connector:
    """``await start()`` returns once streaming (active, or standby behind another instance);
    ``await stop()`` finishes the in-flight batch and closes everything. ``run()`` does both
    around a blocking wait for SIGINT/SIGTERM, for plain scripts."""

    def __init__(self, config: Config | Mapping[str, Any] | str | os.PathLike[str], *,
                 install: bool = True, shutdown_timeout: float = 10.0) -> None:
        self.config = coerce(config)
        self.install = install
        self.shutdown_timeout = shutdown_timeout
        self.metrics = Metrics()
        self._state = "new"
        self.stats = Stats()
        self.router = Router(self.config) if all(r.plain for r in self.config.routes) else None
        self.publishers: dict[str, Publisher] = {
            name: publisher_class(p.type)(name, p.options)
            for name, p in self.config.publishers.items()}
        self.engine = DeliveryEngine(
            self.publishers, limits={n: p.retry for n, p in self.config.publishers.items()},
            metrics=self.metrics)
        server = self.config.server
        self.health = HealthServer(self.metrics, self.readiness, host=server.host,
                                   port=server.port) if server and server.enabled else None
        self._housekept = 0.0  # when the backlog gauges were last refreshed (monotonic)
        for name in self.publishers:
            self.metrics.set_publisher_up(name, True)
        # Publishers whose messages are parked (connector/parking.py), each with its drain.
        self._parked: dict[str, Drainer] = {}
        # A publisher that packs several changes per message (Ably) asks the source to let a
        # trickle gather for a moment before claiming.
        linger = max([self.config.capture.linger, *(p.linger for p in self.publishers.values())])
        source = WalSource if self.config.capture.source == "wal" else TriggerSource
        self.source: Source = source(
            self.config.postgres, dataclasses.replace(self.config.capture, linger=linger))
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._stop_event = asyncio.Event()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        """new, standby, active, reconnecting, stopping or stopped."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        self._state = value
        self.metrics.set_state(value)

    def readiness(self) -> Readiness:
        """For /readyz: connected, active or standby, and (when active) publishers up."""
        connected = self.state in ("active", "standby")
        return Readiness(self.state, connected,
                         {n: n not in self._parked for n in self.publishers})

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("connector already started")
        if self.health is not None:
            await self.health.start()  # /healthz answers while starting
        try:
            await self._start()
        except BaseException:
            if self.health is not None:
                await self.health.stop()
            raise

    async def _start(self) -> None:
        conn = await db.connect(self.config.postgres)
        try:
            if self.install:
                report = await install(conn, self.config)
                log.info("installed", schema=self.config.postgres.schema, added=report.added,
                         changed=report.changed, removed=report.removed,
                         unchanged=len(report.unchanged))
            # Filters compare typed values and column lists must exist: bind routes to the
            # tables as they are now (a mistake is a config error, exit 2).
            infos = await table_info(conn, self.config.tables)
        finally:
            await conn.close()
        self.router = Router(self.config, bind(self.config, infos))
        await self.source.open()  # fail fast when the database is unreachable at start
        for p in self.publishers.values():
            try:
                await p.open()
            except PublishError as exc:  # delivery retries until it is reachable
                log.warning("publisher_unavailable", publisher=p.name, error=str(exc))
        self._task = asyncio.create_task(self._run(), name="pgconnector")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # re-raise what stopped it

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping = True
        self.state = "stopping"
        self._stop_event.set()
        self.source.interrupt()
        log.info("stopping", timeout=self.shutdown_timeout)
        try:
            # asyncio.wait never raises the task's own error or cancellation (a second
            # signal cancels the task; that is a normal way to stop).
            done, _ = await asyncio.wait({self._task}, timeout=self.shutdown_timeout)
            if not done:
                log.warning("shutdown_timeout", detail="in-flight batch rolled back")
                self._task.cancel()
                await asyncio.wait({self._task})
            elif not self._task.cancelled() and self._task.exception() is not None:
                exc = self._task.exception()
                log.error("stopped_by_error", error=f"{type(exc).__name__}: {exc}")
        finally:
            await self._close()

    async def _close(self) -> None:
        await self._stop_drains()
        await self.source.close()
        for p in self.publishers.values():
            await p.close()
        self.state = "stopped"
        if self.health is not None:
            await self.health.stop()
        log.info("stopped", **self.stats.__dict__)

    async def __aenter__(self) -> Connector:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def run(self) -> None:
        """Block until SIGINT/SIGTERM, then stop gracefully; a second signal stops at once
        (the in-flight claim rolls back, so nothing is lost)."""
        asyncio.run(self.run_async())

    async def run_async(self) -> None:
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info("signal_received", signal=signal.Signals(signum).name)
                stop_requested.set()
            elif self._task is not None:
                log.warning("second_signal", detail="exiting now; the in-flight batch rolls back")
                self._task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.start()
            assert self._task is not None
            waiter = asyncio.create_task(stop_requested.wait())
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if self._task.done() and not self._task.cancelled():
                self._task.result()
            await self.stop()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            try:
                if backoff:
                    await self._reopen(backoff)
                    if self._stopping:
                        break
                await self.source.acquire(on_standby=self._on_standby)
                if self._stopping:
                    break
                # Messages parked before (by this or another instance) go first.
                for name in await self.source.parked_among(sorted(self.publishers)):
                    self._park(name)
                self.state = "active"
                self._ready.set()
                log.info("consumer_active", schema=self.config.postgres.schema)
                backoff = 0.0
                await self._consume()
            except SourceDisconnected as exc:
                await self._stop_drains()  # they publish only for the active instance
                self.state = "reconnecting"
                self.stats.reconnects += 1
                self.metrics.reconnect("postgres")
                backoff = min(max(backoff * 2, 0.5), MAX_RECONNECT_BACKOFF)
                log.warning("database_connection_lost", error=str(exc), retry_in=backoff)
                await self.source.close()

    async def _reopen(self, delay: float) -> None:
        while not self._stopping:
            await self._pause(delay * random.uniform(0.5, 1.0))
            if self._stopping:
                return
            try:
                await self.source.open()
                log.info("database_reconnected")
                return
            except db.DatabaseError as exc:
                delay = min(delay * 2, MAX_RECONNECT_BACKOFF)
                log.warning("database_unavailable", error=str(exc), retry_in=delay)

    def _on_standby(self, holder: dict[str, Any] | None) -> None:
        self.state = "standby"
        self._ready.set()
        log.info("consumer_standby", schema=self.config.postgres.schema,
                 active=None if holder is None else holder.get("application_name"))

    async def _consume(self) -> None:
        while not self._stopping:
            batch = await self.source.next_batch()
            if batch is None:
                return
            if not batch.events:  # idle, between transactions: look after the parked
                await self._housekeeping()
                await self._unpark_drained()
                for name in await self.source.parked_among(  # re-queued dead letters?
                        sorted(set(self.publishers) - set(self._parked))):
                    self._park(name)
                continue
            try:
                await self._unpark_drained()
                assert self.router is not None  # set by start()
                messages = self.router.route(batch.events)
                # A parked publisher's messages queue behind what it already has waiting
                # (sorted out per message only while some publisher is parked).
                waiting, direct = ([], messages) if not self._parked else (
                    [Parked(m, None, 0) for m in messages if m.publisher in self._parked],
                    [m for m in messages if m.publisher not in self._parked])
                outcome = await self._deliver(direct) if direct else Outcome()
                await self.source.ack(batch, outcome.dead, waiting + outcome.parked)
            except BaseException:
                await self.source.nack(batch)
                raise
            for name, error in outcome.stalled.items():
                log.warning("publisher_unavailable", publisher=name, error=str(error),
                            detail="its messages wait in the database; retrying")
                self._park(name, error)
            for name in {p.message.publisher for p in waiting}:
                self._parked[name].wake()
            for d in outcome.dead:
                log.error("dead_lettered", publisher=d.message.publisher,
                          channel=d.message.channel, event_id=d.message.message_id, error=d.error)
            self.metrics.batch_claimed(batch.events)
            self.metrics.dead(d.message for d in outcome.dead)
            if time.monotonic() - self._housekept >= HOUSEKEEPING:
                await self._housekeeping()
            self.stats.batches += 1
            self.stats.events += len(batch.events)
            self.stats.messages += len(messages)
            self.stats.dead_letters += len(outcome.dead)
            self.stats.parked += len(waiting) + len(outcome.parked)
            log.debug("batch_delivered", events=len(batch.events), messages=len(messages))

    async def _deliver(self, messages: list[Message]) -> Outcome:
        """Deliver, unless the database connection dies meanwhile: then this instance may no
        longer be the only active one, so publishing stops at once (the batch rolls back
        and is delivered again by whoever holds the lock: duplicates, never a loss)."""
        delivery = asyncio.ensure_future(self.engine.deliver(messages))
        lost = asyncio.ensure_future(self.source.lost.wait())
        try:
            await asyncio.wait({delivery, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not delivery.done():
                delivery.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await delivery
        if delivery.cancelled():
            raise SourceDisconnected("database connection lost while publishing; stopped")
        return delivery.result()

    def _park(self, name: str, failing: PublishError | None = None) -> None:
        """From now on ``name``'s messages are parked, and drained by their own task."""
        if name in self._parked or name not in self.publishers:
            return
        pid, key = self.source.lock
        drainer = Drainer(self.publishers[name], self.config.publishers[name].retry,
                          self.config.postgres, pid, key, self.config.capture.batch_size,
                          metrics=self.metrics, on_dead=self._count_dead)
        self._parked[name] = drainer
        self.metrics.set_publisher_up(name, False)
        drainer.start(failing)

    def _count_dead(self, n: int) -> None:
        self.stats.dead_letters += n

    async def _housekeeping(self) -> None:
        """Refresh the backlog gauges (between batches, on the consumer's connection)."""
        self._housekept = time.monotonic()
        backlog = await self.source.backlog()
        self.metrics.set_backlog(backlog.pending, backlog.oldest_age, backlog.lag_bytes)
        for name in self.publishers:
            self.metrics.set_parked(name, backlog.parked.get(name, 0))
            self.metrics.set_publisher_up(name, name not in self._parked)

    async def _unpark_drained(self) -> None:
        """Between batches, or inside the claim transaction before the batch parks anything:
        a publisher whose parked messages are all delivered gets messages directly again.
        Only this loop parks, so an empty lot cannot be refilled behind its back."""
        for name, drainer in list(self._parked.items()):
            if drainer.idle and not await self.source.has_parked(name):
                del self._parked[name]
                self.metrics.set_publisher_up(name, True)
                await drainer.stop()
                log.info("publisher_recovered", publisher=name)

    async def _stop_drains(self) -> None:
        drainers, self._parked = list(self._parked.values()), {}
        for d in drainers:
            await d.stop()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)
