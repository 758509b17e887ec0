"""The checker itself: a fault suite whose checker cannot see a loss proves nothing."""

from __future__ import annotations

import orjson

from tests.faults.checker import Received, analyse, parse_event


def r(row: int, version: int, event_id: str | None = None) -> Received:
    return Received(row, version, event_id or f"tx-{row}-{version}")


def test_everything_once_in_order() -> None:
    a = analyse({1: 2, 2: 1}, [r(1, 1), r(2, 1), r(1, 2)])
    assert (a.changes, a.received, a.lost, a.extra_copies) == (3, 3, [], 0)
    assert not a.order_violations and not a.changed_event_id and not a.unexpected


def test_a_missing_version_is_lost() -> None:
    a = analyse({1: 3, 2: 1}, [r(1, 1), r(1, 3)])
    assert a.lost == [(1, 2), (2, 1)]


def test_a_redelivered_batch_is_duplicates_not_disorder() -> None:
    # Delivered, not committed, delivered again: versions repeat, and that is not disorder.
    a = analyse({1: 2, 2: 1}, [r(1, 1), r(1, 2), r(2, 1), r(1, 1), r(1, 2), r(2, 1)])
    assert (a.duplicated, a.extra_copies) == (3, 3)
    assert not a.order_violations and not a.changed_event_id and not a.lost


def test_a_copy_with_another_event_id_is_flagged() -> None:
    a = analyse({1: 1}, [r(1, 1, "7-1"), r(1, 1, "8-2")])
    assert a.changed_event_id == [(1, 1)]


def test_an_older_version_after_a_newer_one_is_an_order_violation() -> None:
    a = analyse({1: 3}, [r(1, 1), r(1, 3), r(1, 2)])
    assert a.order_violations == [(1, 2, 3)]
    assert not a.lost


def test_a_change_that_never_committed_is_unexpected() -> None:
    a = analyse({1: 1}, [r(1, 1), r(1, 2), r(5, 1)])
    assert a.unexpected == [(1, 2), (5, 1)]


def test_parse_event_reads_row_version_and_event_id() -> None:
    update = {"id": "900-12", "op": "update", "schema": "public", "table": "items",
              "new": {"id": 4, "version": 3, "payload": "v3"},
              "old": {"id": 4, "version": 2, "payload": "v2"}, "txid": 900}
    assert parse_event(orjson.dumps(update)) == Received(4, 3, "900-12")


def test_rows_with_several_versions_are_counted() -> None:
    assert analyse({1: 3, 2: 1, 3: 2}, []).updated_rows == 2
