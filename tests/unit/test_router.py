from __future__ import annotations

import orjson

from connector.config import parse
from connector.router import Router, render_value
from connector.vocabulary import ChangeEvent


def event(op: str, new: dict[str, object] | None = None, old: dict[str, object] | None = None,
          table: str = "users", position: int = 1) -> ChangeEvent:
    payload = orjson.dumps({"id": f"1-{position}", "op": op, "schema": "public", "table": table,
                            "new": new, "old": old, "txid": 1, "commit_time": "x"})
    return ChangeEvent(position, "public", table, op, payload)


def router(*routes: dict[str, object]) -> Router:
    return Router(parse({"publishers": {"a": {"type": "stdout"}, "b": {"type": "stdout"}},
                         "routes": list(routes)}, env={}))


def test_static_channel_and_operation_filter() -> None:
    r = router({"table": "users", "publisher": "a", "channel": "{schema}.{table}:{op}",
                "operations": ["insert", "delete"]})
    out = r.route([event("insert", {"id": 1}), event("update", {"id": 1}, {"id": 1}),
                   event("delete", None, {"id": 1}), event("insert", {"id": 2}, table="other")])
    assert [(m.channel, m.name) for m in out] == [("public.users:insert", "insert"),
                                                 ("public.users:delete", "delete")]


def test_column_channel_uses_new_row_or_old_for_delete() -> None:
    r = router({"table": "users", "publisher": "a", "channel": "users:{id}:{name}"})
    out = r.route([event("insert", {"id": 7, "name": "Ada"}),
                   event("update", {"id": 7, "name": "Bo"}, {"id": 7, "name": "Ada"}),
                   event("delete", None, {"id": 7, "name": "Bo"}),
                   event("truncate")])
    assert [m.channel for m in out] == ["users:7:Ada", "users:7:Bo", "users:7:Bo", "users:*:*"]


def test_fan_out_keeps_event_order_and_payload_bytes() -> None:
    r = router({"table": "users", "publisher": "a", "channel": "one"},
               {"table": "users", "publisher": "b", "channel": "two:{op}"})
    e1, e2 = event("insert", {"id": 1}, position=1), event("insert", {"id": 2}, position=2)
    out = r.route([e1, e2])
    assert [(m.publisher, m.channel, m.event.position) for m in out] == [
        ("a", "one", 1), ("b", "two:insert", 1), ("a", "one", 2), ("b", "two:insert", 2)]
    assert out[0].payload is e1.payload  # published as built, never re-encoded


def test_render_value() -> None:
    assert [render_value(v) for v in (None, True, False, 3, 2.5, "x", [1, 2])] == [
        "null", "true", "false", "3", "2.5", "x", "[1,2]"]
