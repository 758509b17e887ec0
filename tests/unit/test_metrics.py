"""Metrics: what the connector records shows up in the exposition, per instance."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.metrics import STATES, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = metrics.render()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_counters_sum_per_label_set() -> None:
    m = Metrics()
    m.events_captured("public.users", "insert", 3)
    m.events_captured("public.users", "insert", 2)
    m.events_captured("public.users", "delete", 1)
    m.messages_published("cache", "users:{op}", 5)
    m.messages_failed("cache", "users:{op}", 2)
    m.dead_lettered("cache", "users:{op}", 1)
    m.reconnect("postgres")
    m.reconnect("postgres")
    m.reconnect("cache")
    assert value(m, "pgconnector_events_captured_total", table="public.users", op="insert") == 5
    assert value(m, "pgconnector_events_captured_total", table="public.users", op="delete") == 1
    route = {"publisher": "cache", "route": "users:{op}"}
    assert value(m, "pgconnector_messages_published_total", **route) == 5
    assert value(m, "pgconnector_publish_failures_total", **route) == 2
    assert value(m, "pgconnector_dead_letters_total", **route) == 1
    assert value(m, "pgconnector_reconnects_total", target="postgres") == 2
    assert value(m, "pgconnector_reconnects_total", target="cache") == 1


def test_zero_counts_create_no_series() -> None:
    m = Metrics()
    m.events_captured("public.users", "update", 0)
    m.dead_lettered("cache", "r", 0)
    names = {name for name, _ in samples(m)}
    assert "pgconnector_events_captured_total" not in names
    assert "pgconnector_dead_letters_total" not in names


def test_publish_duration_histogram() -> None:
    m = Metrics()
    m.publish_seconds("cache", 0.0004)
    m.publish_seconds("cache", 0.2)
    m.publish_seconds("cache", 45.0)
    name = "pgconnector_publish_duration_seconds"
    assert value(m, name + "_count", publisher="cache") == 3
    assert value(m, name + "_sum", publisher="cache") == pytest.approx(45.2004)
    assert value(m, name + "_bucket", publisher="cache", le="0.001") == 1
    assert value(m, name + "_bucket", publisher="cache", le="0.25") == 2
    assert value(m, name + "_bucket", publisher="cache", le="30.0") == 2
    assert value(m, name + "_bucket", publisher="cache", le="+Inf") == 3


def test_state_is_one_hot_and_active_follows() -> None:
    m = Metrics()
    assert {s: value(m, "pgconnector_state", state=s) for s in STATES} == {
        s: (1.0 if s == "new" else 0.0) for s in STATES}
    assert value(m, "pgconnector_active") == 0
    m.set_state("active")
    assert [s for s in STATES if value(m, "pgconnector_state", state=s) == 1] == ["active"]
    assert value(m, "pgconnector_active") == 1
    m.set_state("reconnecting")
    assert [s for s in STATES if value(m, "pgconnector_state", state=s) == 1] == ["reconnecting"]
    assert value(m, "pgconnector_active") == 0
    with pytest.raises(ValueError, match="unknown state 'sleeping'"):
        m.set_state("sleeping")


def test_gauges() -> None:
    m = Metrics()
    m.set_backlog(120, 3.5)
    m.set_parked("ably", 7)
    m.set_publisher_up("ably", False)
    m.set_publisher_up("cache", True)
    assert value(m, "pgconnector_outbox_backlog") == 120
    assert value(m, "pgconnector_outbox_oldest_age_seconds") == 3.5
    assert value(m, "pgconnector_parked", publisher="ably") == 7
    assert value(m, "pgconnector_publisher_up", publisher="ably") == 0
    assert value(m, "pgconnector_publisher_up", publisher="cache") == 1
    m.set_backlog(0, None)  # empty outbox
    m.set_parked("ably", 0)
    assert value(m, "pgconnector_outbox_backlog") == 0
    assert value(m, "pgconnector_outbox_oldest_age_seconds") == 0
    assert value(m, "pgconnector_parked", publisher="ably") == 0


def test_instances_do_not_share_values() -> None:
    a, b = Metrics(), Metrics()
    a.events_captured("public.t", "insert", 4)
    a.set_state("active")
    a.set_backlog(9, 1.0)
    assert value(a, "pgconnector_events_captured_total", table="public.t", op="insert") == 4
    assert value(b, "pgconnector_events_captured_total", table="public.t", op="insert") is None
    assert value(b, "pgconnector_state", state="new") == 1
    assert value(b, "pgconnector_outbox_backlog") == 0


def test_render_is_prometheus_text_with_only_our_and_process_metrics() -> None:
    m = Metrics()
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "pgconnector_state" in names
    assert all(n.startswith(("pgconnector_", "process_")) for n in names), names
