"""The Connector: lifecycle, signals, the lease and the HTTP host around the pipeline.

It builds the parts from the config (store, reader on its session, sinks from the registry,
delivery engine, parking, router, pipeline), and runs: connect → hold the lease (or wait as a
standby) → run the pipeline → on a lost session, reconnect with backoff and start over.
connector/pipeline.py is what happens to each batch; docs/architecture.md the whole map.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import structlog

from connector import db
from connector.binding import BoundRoute, TableInfo, bind
from connector.config import coerce, handler_config, operator_config
from connector.delivery.engine import Delivery
from connector.delivery.parking import Parking
from connector.handlers import BEFORE_ATTACH, CHANNEL, HandlerSink, Snapshot, handler_route
from connector.lease import Lease
from connector.live.sink import LiveSink
from connector.metrics import Metrics
from connector.operators import OperatorSink, with_operators
from connector.pipeline import Pipeline, Stats
from connector.publishers.base import Publisher
from connector.publishers.registry import publisher_class
from connector.readers import ReaderDisconnected, open_reader
from connector.router import Router
from connector.server import HealthServer, Readiness
from connector.store import operators as operator_checks
from connector.store.catalog import table_info
from connector.store.install import install
from connector.store.postgres import PostgresStore
from connector.store.queries import Queries
from connector.vocabulary import (
    OPERATIONS,
    Config,
    ConfigError,
    HandlerConfig,
    OperatorConfig,
    PublishError,
    RetryConfig,
    Route,
    TableName,
)

log = structlog.get_logger("pgconnector")

MAX_RECONNECT_BACKOFF = 30.0

__all__ = ["Connector", "Stats", "Subscription"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass
class Subscription:
    """A handler attached to a table. ``await detach()``: no more calls, and the table's
    capture goes when nothing else needs it."""

    connector: Connector
    config: HandlerConfig
    name: str = ""  # its sink's name (dead letters are filed under it), once attached

    @property
    def table(self) -> TableName:
        return self.config.table

    async def detach(self) -> None:
        await self.connector._detach(self)


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
        self.delivery = Delivery(
            self.publishers, limits={n: p.retry for n, p in self.config.publishers.items()},
            metrics=self.metrics)
        server = self.config.server
        mounts = [p.mount for p in self.publishers.values() if p.serving]
        # Live subscriptions: a sink of its own, on the health server's listener when both
        # are configured on the same host and port, else on a listener of its own.
        self.live: LiveSink | None = None
        if (live := self.config.live) is not None:
            shares = bool(server and server.enabled and (server.host, server.port) == (
                live.host, live.port))
            self.live = LiveSink(f"live:{live.path}", live, own_listener=not shares,
                                 metrics=self.metrics)
            if shares:
                mounts.append(self.live.mount)
            self.delivery.add(self.live, RetryConfig())
        self.health = HealthServer(self.metrics, self.readiness, host=server.host,
                                   port=server.port, mounts=mounts
                                   ) if server and server.enabled else None
        for name in self.publishers:
            self.metrics.set_publisher_up(name, True)
        # A sink that packs several changes per message (Ably) asks the reader to let a
        # trickle gather for a moment before claiming.
        linger = max([self.config.capture.linger, *(p.linger for p in self.publishers.values())])
        capture = dataclasses.replace(self.config.capture, linger=linger)
        self.store = PostgresStore(self.config.postgres, capture)
        self.reader = open_reader(self.config.postgres, capture, self.store)
        self.session = self.reader.session
        self.lease = Lease(self.session, self.store)
        self.parking = Parking(self.delivery, self.store, capture.batch_size,
                               metrics=self.metrics, on_dead=self._count_dead)
        self.pipeline: Pipeline | None = None
        # Handlers: those given before start (config, on, subscribe), then the attached ones
        # by sink name; the config with their routes added, and the routes bound.
        self._pending: list[Subscription] = [Subscription(self, h) for h in self.config.handlers]
        self.handlers: dict[str, HandlerSink] = {}
        # Operators: those of the config and of Connector.operator, then their sinks.
        self._operators: list[OperatorConfig] = list(self.config.operators)
        self.operators: dict[str, OperatorSink] = {}
        self._effective = self.config
        self._bound: list[BoundRoute] = []
        self._attaching = asyncio.Lock()
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

    @property
    def parked(self) -> set[str]:
        """The sinks whose messages are parked (waiting in the database) right now."""
        return set(self.parking.drains)

    def readiness(self) -> Readiness:
        """For /readyz: connected, active or standby, and (when active) publishers up."""
        connected = self.state in ("active", "standby")
        return Readiness(self.state, connected,
                         {n: n not in self.parking for n in self.publishers})

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
        self._effective = self.config
        if self.live is not None:  # its tables' changes, whole: the live sink filters
            routes = list(self.config.routes)
            for table in self.live.config.tables:
                routes.append(Route(len(routes), table, frozenset(OPERATIONS), self.live.name,
                                    CHANNEL, path="live.tables"))
            self._effective = dataclasses.replace(self.config, routes=tuple(routes))
        for sub in self._pending:
            sub.name = ""
        for sub in self._pending:  # config handlers first: named as with_handlers names them
            self._effective = dataclasses.replace(
                self._effective, routes=(*self._effective.routes, self._route(sub)))
        self._effective = with_operators(dataclasses.replace(
            self._effective, operators=tuple(self._operators)))
        conn = await db.connect(self.config.postgres)
        try:
            # Operators' SQL prepared against the database: a mistake is a config error
            # (exit 2) before anything is installed.
            bindings = await operator_checks.check(conn, self._effective)
            if self.install:
                report = await install(conn, self._effective, checked=True)
                log.info("installed", schema=self.config.postgres.schema, added=report.added,
                         changed=report.changed, removed=report.removed,
                         unchanged=len(report.unchanged))
            # Filters compare typed values and column lists must exist: bind routes to the
            # tables as they are now (a mistake is a config error, exit 2).
            infos = await table_info(conn, self._effective.tables)
        finally:
            await conn.close()
        self._bound = bind(self._effective, infos)
        self.router = Router(self._effective, self._bound)
        if self.live is not None:
            self.live.bind(infos)
        for sub in self._pending:
            self._add_sink(sub, infos)
        self._pending = []
        for op in self._operators:
            sink = self.operators[op.sink] = OperatorSink(op, bindings[op.name])
            self.delivery.add(sink, op.retry)
            self.metrics.set_publisher_up(sink.name, True)
        await self._open()  # fail fast when the database is unreachable at start
        if self.live is not None:
            await self.live.open()  # its own listener, when it has one
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

    async def _open(self) -> None:
        await self.session.open()
        await self.reader.open()

    async def _close_reader(self) -> None:
        await self.reader.close()
        await self.session.close()

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping = True
        self.state = "stopping"
        self._stop_event.set()
        if self.pipeline is not None:
            self.pipeline.stop()
        self.reader.interrupt()
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
        await self.parking.stop()
        await self._close_reader()
        for p in [*self.publishers.values(), *self.handlers.values(),
                  *self.operators.values(), *([self.live] if self.live else [])]:
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
            await self.stop()  # publishers and the HTTP host close, whatever ended the run
            if self._task.done() and not self._task.cancelled():
                self._task.result()  # the error that stopped it (db.ChangesLost: exit 1)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    # ------------------------------------------------------------------ handlers

    def on(self, table: str, *operations: str, **options: Any) -> Callable[[F], F]:
        """Decorator: call the function for each change of ``table`` (its ``operations``,
        default all), with a route's options (README: Handlers). Before start only; the
        function is returned unchanged."""
        if self._task is not None:
            raise RuntimeError(f"Connector.on({table!r}) is for before start(); while running "
                               f"use `await connector.subscribe({table!r}, handler, ...)`")

        path = f"on({table!r})"
        config = handler_config(table, print, operations or None, options, path)  # checked now

        def register(function: F) -> F:
            self._pending.append(Subscription(self, dataclasses.replace(
                config, function=function)))
            return function

        return register

    def operator(self, tables: Mapping[str, str], *, name: str | None = None,
                 **options: Any) -> Callable[[F], F]:
        """Decorator: a Python operator, ``async def f(tx, key, events)``, called in the
        transaction that takes the changes of ``tables`` (table -> key column), once per
        changed key and batch (``events``: that key's changes, in order); ``tx`` runs SQL
        (``execute``, ``executemany``, ``fetch``, ``fetchrow``, ``fetchval``). Options as an
        ``operators:`` entry's (README: Operators); ``name`` defaults to the function's.
        Before start only."""
        if self._task is not None:
            raise RuntimeError("Connector.operator is for before start()")

        def register(function: F) -> F:
            op_name = str(name or getattr(function, "__name__", "operator"))
            path = f"operator({op_name!r})"
            config = operator_config(op_name, tables, function, options, path, checked=False)
            if any(o.name == op_name for o in self._operators):
                raise ConfigError([f"{path}: an operator named {op_name!r} exists already"])
            self._operators.append(config)
            return function

        return register

    async def subscribe(self, table: str, handler: Callable[..., Any], *,
                        operations: list[str] | tuple[str, ...] | None = None,
                        **options: Any) -> Subscription:
        """Attach ``handler`` to ``table``, before start or while running. While running it
        installs the table's capture when nothing captured it yet, and returns once changes
        committed from then on will reach the handler; it never sees earlier ones."""
        config = handler_config(table, handler, operations, options, f"subscribe({table!r})")
        sub = Subscription(self, config)
        if self._task is None:
            self._pending.append(sub)
            return sub
        await self._attach(sub)
        return sub

    def _route(self, sub: Subscription) -> Route:
        """The handler's route; its sink's name goes on the subscription."""
        taken = set(self.handlers) | set(self.publishers) | {
            s.name for s in self._pending if s.name}
        index = 1 + max([r.index for r in self._effective.routes] or [-1])
        route = handler_route(sub.config, index, taken)
        sub.name = route.publisher
        return route

    def _add_sink(self, sub: Subscription, infos: Mapping[TableName, TableInfo]) -> HandlerSink:
        info = infos.get(sub.table)
        sink = HandlerSink(sub.name, sub.config, info.key if info is not None else ())
        self.handlers[sub.name] = sink
        self.delivery.add(sink, sub.config.retry)
        self.metrics.set_publisher_up(sub.name, True)
        return sink

    def _set_router(self, router: Router) -> None:
        """The routes change between batches: the pipeline routes each batch once."""
        self.router = router
        if self.pipeline is not None:
            self.pipeline.router = router

    async def _attach(self, sub: Subscription) -> None:
        async with self._attaching:
            route = self._route(sub)
            effective = dataclasses.replace(self._effective,
                                            routes=(*self._effective.routes, route))
            conn = await db.connect(self.config.postgres)
            try:
                infos = await table_info(conn, effective.tables)
                if sub.table not in infos:
                    raise ConfigError([f"{route.at}.table: table {sub.table} does not exist"])
                bound = bind(effective, infos)
                sink = self._add_sink(sub, infos)
                await sink.open()
                # Until the snapshot below, whatever reaches the sink was committed before
                # it (nothing else can have been read yet): skip it.
                sink.after = BEFORE_ATTACH
                previous = (self.router, self._bound)
                self._set_router(Router(effective, bound))
                try:
                    if self.install:
                        await install(conn, effective)
                    snapshot = await conn.fetchval(
                        Queries(self.config.postgres.schema).get("current_snapshot"))
                except BaseException:
                    assert previous[0] is not None
                    self._set_router(previous[0])
                    self._forget(sub.name)
                    await sink.close()
                    raise
                sink.after = Snapshot.parse(snapshot)
                self._effective, self._bound = effective, bound
            finally:
                await conn.close()
            log.info("handler_attached", handler=sub.name, table=str(sub.table))

    def _forget(self, name: str) -> None:
        self.delivery.remove(name)
        self.handlers.pop(name, None)

    async def _detach(self, sub: Subscription) -> None:
        if sub in self._pending:
            self._pending.remove(sub)
            return
        async with self._attaching:
            sink = self.handlers.get(sub.name)
            if sink is None:
                return  # detached already
            sink.detached = True  # no more calls, from now
            effective = dataclasses.replace(self._effective, routes=tuple(
                r for r in self._effective.routes if r.publisher != sub.name))
            bound = [b for b in self._bound if b.route.publisher != sub.name]
            self._set_router(Router(effective, bound))
            self._forget(sub.name)
            await self.parking.forget(sub.name)
            self._effective, self._bound = effective, bound
            conn = await db.connect(self.config.postgres)
            try:
                discarded = await self.store.discard_parked(conn, sub.name)
                if self.install:
                    await install(conn, effective)  # capture no longer needed goes
            finally:
                await conn.close()
            await sink.close()
            if discarded:
                log.info("handler_parked_discarded", handler=sub.name, messages=discarded)
            log.info("handler_detached", handler=sub.name, table=str(sub.table))

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        backoff = 0.0
        assert self.router is not None  # set by start()
        while not self._stopping:
            try:
                if backoff:
                    await self._reopen(backoff)
                    if self._stopping:
                        break
                await self.lease.acquire(on_standby=self._on_standby)
                if self._stopping:
                    break
                self.pipeline = Pipeline(self.reader, self.router, self.delivery,
                                         self.parking, self.store, self.session,
                                         lambda: self.lease.held, self.metrics, self.stats)
                await self.pipeline.start()
                self.state = "active"
                self._ready.set()
                log.info("consumer_active", schema=self.config.postgres.schema)
                backoff = 0.0
                await self.pipeline.run()
            except ReaderDisconnected as exc:
                await self.parking.stop()  # drains publish only for the active instance
                self.state = "reconnecting"
                self.stats.reconnects += 1
                self.metrics.reconnect("postgres")
                backoff = min(max(backoff * 2, 0.5), MAX_RECONNECT_BACKOFF)
                log.warning("database_connection_lost", error=str(exc), retry_in=backoff)
                await self._close_reader()

    async def _reopen(self, delay: float) -> None:
        while not self._stopping:
            await self._pause(delay * random.uniform(0.5, 1.0))
            if self._stopping:
                return
            try:
                await self._open()
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

    def _count_dead(self, n: int) -> None:
        self.stats.dead_letters += n

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)
