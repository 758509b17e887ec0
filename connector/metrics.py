"""Prometheus metrics of one Connector.

Each ``Metrics`` owns its own registry, never prometheus_client's global one: several
Connectors may live in one process (tests, a host program), and each must count only its own
work. The connector calls these methods once per batch with counts, so the hot path stays
per-batch. Label values are table, publisher and route names only, never secrets.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector

from connector.vocabulary import ChangeEvent, Message, PermanentError

STATES = ("new", "standby", "active", "reconnecting", "stopping", "stopped")


def route_label(index: int) -> str:
    """``routes[2]`` for the config's third route; ``retried`` for a message re-queued from
    the dead letters, whose route is no longer known."""
    return f"routes[{index}]" if index >= 0 else "retried"

# From a local Redis round trip (~1 ms) to an Ably request that hits its timeout (10-30 s).
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)


class Metrics:
    """The counters, gauges and histogram the health server exposes at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_* (memory, CPU, open fds), as the default registry would have; no-op off Linux.
        ProcessCollector(registry=r)
        self._captured = Counter(
            "pgconnector_events_captured", "Row changes claimed from the outbox.",
            ["table", "op"], registry=r)
        self._published = Counter(
            "pgconnector_messages_published", "Messages a publisher accepted.",
            ["publisher", "route"], registry=r)
        self._failed = Counter(
            "pgconnector_publish_failures", "Retryable publish failures (every retry counts).",
            ["publisher", "route"], registry=r)
        self._dead = Counter(
            "pgconnector_dead_letters", "Messages moved to the dead-letter table.",
            ["publisher", "route"], registry=r)
        self._publish_seconds = Histogram(
            "pgconnector_publish_duration_seconds", "Duration of one publish call.",
            ["publisher"], buckets=PUBLISH_BUCKETS, registry=r)
        self._reconnects = Counter(
            "pgconnector_reconnects", "Connections re-opened after a loss.",
            ["target"], registry=r)
        self._live_clients = Gauge(
            "pgconnector_live_clients", "Live subscription clients connected.", registry=r)
        self._live_subscriptions = Gauge(
            "pgconnector_live_subscriptions", "Live subscriptions of the connected clients.",
            registry=r)
        self._live_sent = Counter(
            "pgconnector_live_events_sent", "Events sent to live clients.", ["transport"],
            registry=r)
        self._live_resyncs = Counter(
            "pgconnector_live_resyncs", "Resyncs sent to live clients (slow: fell behind; "
            "resume: asked for an id older than the replay buffer).", ["reason"], registry=r)
        self._live_slow = Counter(
            "pgconnector_live_slow_closes", "Live clients closed for falling behind.",
            registry=r)
        self._live_auth = Counter(
            "pgconnector_live_auth_failures", "Live connections refused for their token.",
            registry=r)
        self._state = Gauge(
            "pgconnector_state", "1 for the connector's current state, 0 for the others.",
            ["state"], registry=r)
        self._active = Gauge(
            "pgconnector_active", "1 while this instance is the active consumer.", registry=r)
        self._backlog = Gauge(
            "pgconnector_outbox_backlog", "Changes waiting in the outbox.", registry=r)
        self._oldest = Gauge(
            "pgconnector_outbox_oldest_age_seconds",
            "Age of the oldest change in the outbox (0 when empty).", registry=r)
        self._slot_lag = Gauge(
            "pgconnector_slot_lag_bytes",
            "How far the slot's confirmed position is behind the WAL's end (the wal source), "
            "bytes.", registry=r)
        self._slot_retained = Gauge(
            "pgconnector_slot_retained_wal_bytes",
            "WAL the replication slot keeps the server from removing, bytes.", registry=r)
        self._slot_lag_seconds = Gauge(
            "pgconnector_slot_lag_seconds",
            "From a heartbeat's write into the WAL to its confirmation (the wal source), "
            "seconds.", registry=r)
        self._slot_safe = Gauge(
            "pgconnector_slot_safe_wal_bytes",
            "WAL that may still be written before PostgreSQL invalidates the slot "
            "(max_slot_wal_keep_size; -1 when unlimited), bytes.", registry=r)
        self._slot_near_limit = Gauge(
            "pgconnector_slot_near_limit",
            "1 while the slot is close to max_slot_wal_keep_size (its changes would be lost).",
            registry=r)
        self._parked = Gauge(
            "pgconnector_parked", "Messages waiting for a publisher that is down.",
            ["publisher"], registry=r)
        self._publisher_up = Gauge(
            "pgconnector_publisher_up", "1 while the publisher is reachable, 0 while it is down.",
            ["publisher"], registry=r)
        self.set_state("new")  # every state series exists from the first scrape

    # ------------------------------------------------------------------ counters

    def events_captured(self, table: str, op: str, n: int) -> None:
        if n:
            self._captured.labels(table, op).inc(n)

    def messages_published(self, publisher: str, route: str, n: int) -> None:
        if n:
            self._published.labels(publisher, route).inc(n)

    def messages_failed(self, publisher: str, route: str, n: int) -> None:
        if n:
            self._failed.labels(publisher, route).inc(n)

    def dead_lettered(self, publisher: str, route: str, n: int) -> None:
        if n:
            self._dead.labels(publisher, route).inc(n)

    def publish_seconds(self, publisher: str, seconds: float) -> None:
        self._publish_seconds.labels(publisher).observe(seconds)

    def reconnect(self, target: str) -> None:
        self._reconnects.labels(target).inc()

    # ------------------------------------------------------------------ per batch

    def batch_claimed(self, events: Iterable[ChangeEvent]) -> None:
        for (schema, table, op), n in collections.Counter(
                (e.schema, e.table, e.op) for e in events).items():
            self.events_captured(f"{schema}.{table}", op, n)

    def publish_attempt(self, publisher: str, messages: Sequence[Message],
                        failures: Mapping[int, Exception], seconds: float) -> None:
        """One publish call: its duration, what got through and what may be retried, per
        route (rejected messages are counted when they are dead-lettered)."""
        self.publish_seconds(publisher, seconds)
        ok = collections.Counter(m.route for i, m in enumerate(messages) if i not in failures)
        retry = collections.Counter(messages[i].route for i, e in failures.items()
                                    if not isinstance(e, PermanentError))
        for route, n in ok.items():
            self.messages_published(publisher, route_label(route), n)
        for route, n in retry.items():
            self.messages_failed(publisher, route_label(route), n)

    def dead(self, messages: Iterable[Message]) -> None:
        for (publisher, route), n in collections.Counter(
                (m.publisher, m.route) for m in messages).items():
            self.dead_lettered(publisher, route_label(route), n)

    # ------------------------------------------------------------------ gauges

    def live_clients(self, clients: int, subscriptions: int) -> None:
        self._live_clients.set(clients)
        self._live_subscriptions.set(subscriptions)

    def live_sent(self, transport: str, n: int = 1) -> None:
        self._live_sent.labels(transport).inc(n)

    def live_resync(self, reason: str) -> None:
        self._live_resyncs.labels(reason).inc()
        if reason == "slow":
            self._live_slow.inc()

    def live_auth_failure(self) -> None:
        self._live_auth.inc()

    def set_state(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r} (expected one of {', '.join(STATES)})")
        for s in STATES:
            self._state.labels(s).set(1 if s == state else 0)
        self._active.set(1 if state == "active" else 0)

    def set_backlog(self, pending: int | None, oldest_age_seconds: float | None) -> None:
        """``None``: what the source cannot tell (the wal source counts bytes, not changes)."""
        if pending is not None:
            self._backlog.set(pending)
            self._oldest.set(oldest_age_seconds or 0.0)

    def set_slot(self, *, lag_bytes: int, retained_bytes: int, safe_wal_bytes: int | None,
                 near_limit: bool, lag_seconds: float | None) -> None:
        self._slot_lag.set(lag_bytes)
        self._slot_retained.set(retained_bytes)
        self._slot_safe.set(-1 if safe_wal_bytes is None else safe_wal_bytes)
        self._slot_near_limit.set(1 if near_limit else 0)
        if lag_seconds is not None:
            self._slot_lag_seconds.set(lag_seconds)

    def set_parked(self, publisher: str, n: int) -> None:
        self._parked.labels(publisher).set(n)

    def set_publisher_up(self, publisher: str, up: bool) -> None:
        self._publisher_up.labels(publisher).set(1 if up else 0)

    # ------------------------------------------------------------------ exposition

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
