"""The consume loop, parking, retry/backoff and ack ordering on the in-memory Reader, Store and
Sink of connector/testing.py: no network, no PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from connector.delivery.engine import Delivery, lanes
from connector.readers.base import ReaderDisconnected
from connector.testing import (
    FAST,
    Harness,
    MemoryReader,
    MemoryStore,
    MemoryTransaction,
    RecordingSink,
    event,
    route,
)
from connector.vocabulary import Executor, Message, Parked, RetryConfig

QUICK_DRAIN = RetryConfig(initial_backoff=0.001, max_backoff=0.005)


def batches(*sizes: int) -> list[list]:  # type: ignore[type-arg]
    out, n = [], 0
    for size in sizes:
        out.append([event(n + i) for i in range(size)])
        n += size
    return out


async def test_every_batch_is_delivered_in_order_and_acked_in_order() -> None:
    reader = MemoryReader(batches(3, 2, 4))
    sink = RecordingSink("cache")
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader)
    await h.run()
    assert sink.positions() == list(range(9))
    assert reader.acked == [0, 1, 2] and reader.nacked == []
    assert h.stats.batches == 3 and h.stats.events == 9 and h.stats.messages == 9


async def test_unrouted_events_are_acked_without_messages() -> None:
    reader = MemoryReader([[event(1, table="public.other")], [event(2)]])
    sink = RecordingSink("cache")
    await Harness([route("public.items", "cache")], {"cache": sink}, reader).run()
    assert sink.positions() == [2] and reader.acked == [0, 1]


async def test_retryable_failures_are_retried_within_the_batch() -> None:
    reader = MemoryReader(batches(2))
    sink = RecordingSink("cache")
    sink.fail_next(2)  # FAST allows 3 tries
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader)
    await h.run()
    assert sink.positions() == [0, 1] and sink.calls == 3
    assert h.store.parked == {} and h.store.dead == []


def test_backoff_doubles_up_to_its_ceiling_with_jitter() -> None:
    retry = RetryConfig(initial_backoff=0.1, max_backoff=1.0)
    for attempt, top in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (50, 1.0)]:
        waits = [retry.delay(attempt) for _ in range(200)]
        assert all(top / 2 <= w <= top for w in waits)
        assert max(waits) - min(waits) > 0  # jittered, not fixed


async def test_a_sink_that_stays_down_is_parked_then_drained_in_order() -> None:
    reader = MemoryReader(batches(2), finite=False)
    sink, other = RecordingSink("cache"), RecordingSink("other")
    sink.down = True
    h = Harness([route("public.items", "cache"), route("public.items", "other", index=1)],
                {"cache": sink, "other": other}, reader, limits={"cache": QUICK_DRAIN})
    task = asyncio.create_task(h.run())
    await h.until(lambda: reader.acked == [0])
    # The batch is acked: its messages for the down sink wait in the store, committed with it.
    assert [m.event.position for m in h.store.parked_messages("cache")] == [0, 1]
    assert "cache" in h.parking and other.positions() == [0, 1]
    # Later changes queue behind them, never overtake: not even tried directly.
    calls = sink.calls
    reader.add([event(2), event(3)])
    await h.until(lambda: reader.acked == [0, 1])
    assert [m.event.position for m in h.store.parked_messages("cache")] == [0, 1, 2, 3]
    assert other.positions() == [0, 1, 2, 3]
    sink.down = False
    await h.until(lambda: sink.positions() == [0, 1, 2, 3])
    await h.until(lambda: "cache" not in h.parking)  # unparked once its lot is empty
    assert sink.calls > calls
    reader.add([event(4)])
    await h.until(lambda: sink.positions() == [0, 1, 2, 3, 4])
    assert h.store.parked_messages("cache") == [] and h.store.dead == []
    h.pipeline.stop()
    await task


async def test_messages_parked_before_start_are_drained_first() -> None:
    store = MemoryStore()
    sink = RecordingSink("cache")
    early = Message("cache", "items", "insert", event(0).payload, event(0))
    await store.record(None, [], [Parked(early, "was down", 3)])  # type: ignore[arg-type]
    reader = MemoryReader([[event(1)]], finite=False)
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader, store,
                limits={"cache": QUICK_DRAIN})
    task = asyncio.create_task(h.run())
    await h.until(lambda: sink.positions() == [0, 1])
    h.pipeline.stop()
    await task


async def test_a_permanent_error_dead_letters_only_its_message() -> None:
    reader = MemoryReader(batches(3))
    sink, other = RecordingSink("cache"), RecordingSink("other")
    sink.reject = lambda m: m.event.position == 1
    h = Harness([route("public.items", "cache"), route("public.items", "other", index=1)],
                {"cache": sink, "other": other}, reader)
    await h.run()
    assert sink.positions() == [0, 2] and other.positions() == [0, 1, 2]
    assert [(d.message.event.position, d.message.publisher) for d in h.store.dead] == [
        (1, "cache")]
    assert h.stats.dead_letters == 1 and reader.acked == [0]


async def test_retry_max_attempts_dead_letters_instead_of_parking() -> None:
    reader = MemoryReader(batches(1))
    sink = RecordingSink("cache")
    sink.down = True
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader,
                limits={"cache": RetryConfig(max_attempts=2)})
    await h.run()
    assert sink.calls == 2 and h.store.parked == {} and len(h.store.dead) == 1
    assert "cache" not in h.parking


async def test_the_outcome_is_recorded_before_the_ack_and_lost_with_a_nack() -> None:
    """Dead letters become visible only with the ack; when recording fails the batch is
    nacked and comes again (same events, same order), and nothing of it was recorded."""
    reader = MemoryReader(batches(2))
    sink = RecordingSink("cache")
    sink.reject = lambda m: True
    store = MemoryStore()
    failures = [RuntimeError("store down")]
    record = store.record

    async def flaky_record(ex, dead, parked):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        await record(ex, dead, parked)

    store.record = flaky_record  # type: ignore[method-assign]
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader, store)
    with pytest.raises(RuntimeError, match="store down"):
        await h.run()
    assert reader.nacked == [0] and reader.acked == [] and store.dead == []
    await h.run()  # the same batch again
    assert reader.acked == [0] and [d.message.event.position for d in store.dead] == [0, 1]


async def test_a_lost_session_stops_publishing_and_nacks() -> None:
    reader = MemoryReader(batches(1))
    sink = RecordingSink("cache", delay=5.0)
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader)
    task = asyncio.create_task(h.run())
    await h.until(lambda: sink.calls == 1)
    reader.lost.set()
    with pytest.raises(ReaderDisconnected):
        await asyncio.wait_for(task, 2)
    assert reader.nacked == [0] and reader.acked == [] and sink.delivered == []


async def test_a_drain_hands_out_nothing_without_the_lease() -> None:
    store = MemoryStore()
    sink = RecordingSink("cache")
    sink.down = True
    reader = MemoryReader(batches(1), finite=False)
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader, store,
                limits={"cache": QUICK_DRAIN})
    task = asyncio.create_task(h.run())
    await h.until(lambda: reader.acked == [0] and "cache" in h.parking)
    store.lease_held = False
    sink.down = False
    await asyncio.sleep(0.05)
    assert sink.delivered == []  # another instance may be active: never publish
    store.lease_held = True
    await h.until(lambda: sink.positions() == [0])
    h.pipeline.stop()
    await task


async def test_max_in_flight_bounds_calls_and_lanes_keep_channel_order() -> None:
    sink = RecordingSink("cache", max_in_flight=3, delay=0.01)
    events = [event(i, new={"id": i % 5}) for i in range(40)]
    messages = [Message("cache", f"c{i % 5}", "insert", e.payload, e)
                for i, e in enumerate(events)]
    delivery = Delivery({"cache": sink}, inline=FAST)
    out = await delivery.deliver(messages)
    assert out.dead == [] and out.parked == []
    assert 1 < sink.peak <= 3  # concurrent, never past the declared limit
    for c in range(5):
        assert sink.positions(f"c{c}") == [i for i in range(40) if i % 5 == c]
    # The drain shares the gate: with the live batch in flight, at most max_in_flight calls.
    one = RecordingSink("one", delay=0.01)
    d = Delivery({"one": one}, inline=FAST)
    await asyncio.gather(*(d.attempt(one, messages[:2]) for _ in range(5)))
    assert one.peak == 1


def test_lanes_per_key_and_none() -> None:
    events = [event(i, new={"id": i % 3}) for i in range(12)]
    messages = [Message("k", "same", "insert", e.payload, e) for e in events]
    by_key = lanes(messages, 3, "key")
    assert sorted(m.event.position for lane in by_key for m in lane) == list(range(12))
    lane_of: dict[int, int] = {}
    for n, lane in enumerate(by_key):  # each row's changes in one lane, in order
        for m in lane:
            assert lane_of.setdefault(m.event.row["id"], n) == n  # type: ignore[index]
        positions = [m.event.position for m in lane]
        assert positions == sorted(positions)
    assert [len(lane) for lane in lanes(messages, 3, "none")] == [4, 4, 4]
    assert lanes(messages, 3, "channel") == [messages]  # one channel: one lane
    assert lanes(messages, 1, "key") == [messages]


async def test_a_sink_failing_inside_a_drain_is_retried_with_backoff() -> None:
    reader = MemoryReader(batches(1), finite=False)
    sink = RecordingSink("cache")
    sink.down = True
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader,
                limits={"cache": QUICK_DRAIN})
    task = asyncio.create_task(h.run())
    await h.until(lambda: "cache" in h.parking)
    before = sink.calls
    await h.until(lambda: sink.calls >= before + 3)  # the drain keeps trying
    rows = h.store.parked["cache"]
    assert rows[0].attempts >= 3 + 2 and rows[0].error == "cache is down"
    sink.down = False
    await h.until(lambda: sink.positions() == [0])
    h.pipeline.stop()
    await task


async def test_a_drain_dead_letters_past_max_age() -> None:
    reader = MemoryReader(batches(1), finite=False)
    sink = RecordingSink("cache")
    sink.down = True
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader,
                limits={"cache": RetryConfig(max_age=0.05, initial_backoff=0.001,
                                             max_backoff=0.005)})
    task = asyncio.create_task(h.run())
    await h.until(lambda: len(h.store.dead) == 1)
    assert h.store.dead[0].error.startswith("gave up after 0.05 s")
    h.pipeline.stop()
    await task


async def test_permanent_errors_in_a_drain_dead_letter_at_once() -> None:
    reader = MemoryReader(batches(2), finite=False)
    sink = RecordingSink("cache")
    sink.down = True
    h = Harness([route("public.items", "cache")], {"cache": sink}, reader,
                limits={"cache": QUICK_DRAIN})
    task = asyncio.create_task(h.run())
    await h.until(lambda: "cache" in h.parking)
    sink.reject = lambda m: m.event.position == 0
    sink.down = False
    await h.until(lambda: sink.positions() == [1])
    assert [d.message.event.position for d in h.store.dead] == [0]
    h.pipeline.stop()
    await task


class Transactional(RecordingSink):
    """Writes on the batch's writer: what it did lands only when the batch is acked."""

    transactional = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.committed: list[int] = []

    async def publish_in(self, tx: Executor, messages: Sequence[Message]) -> None:
        assert isinstance(tx, MemoryTransaction)
        before = len(self.delivered)
        try:
            await self.publish(messages)  # fails as scripted
        finally:  # what got through is written on the batch, rejected or not the others
            done = [m.event.position for m in self.delivered[before:]]
            tx.pending.append(lambda: self.committed.extend(done))



async def test_a_transactional_sink_writes_on_the_batch_and_commits_with_its_ack() -> None:
    reader = MemoryReader(batches(2, 1))
    op, cache = Transactional("op"), RecordingSink("cache")
    h = Harness([route("public.items", "op"), route("public.items", "cache", index=1)],
                {"op": op, "cache": cache}, reader)
    await h.run()
    assert op.committed == [0, 1, 2] and cache.positions() == [0, 1, 2]
    assert reader.acked == [0, 1]


async def test_a_transactional_sinks_writes_roll_back_with_a_nack() -> None:
    reader = MemoryReader(batches(2))
    op = Transactional("op")
    store = MemoryStore()
    record = store.record

    async def failing_record(ex, dead, parked):  # type: ignore[no-untyped-def]
        raise RuntimeError("commit lost")

    op.reject = lambda m: m.event.position == 1  # 0 is written, 1 is a dead letter
    store.record = failing_record  # type: ignore[method-assign]
    h = Harness([route("public.items", "op")], {"op": op}, reader, store)
    with pytest.raises(RuntimeError, match="commit lost"):
        await h.run()
    assert op.positions() == [0] and op.committed == [] and reader.nacked == [0]
    store.record = record  # type: ignore[method-assign]
    op.reject = lambda m: False
    await h.run()
    assert op.committed == [0, 1] and reader.acked == [0]


async def test_a_writer_committed_before_the_ack_is_not_applied_twice() -> None:
    """As with the wal source: the writer commits, the ack never happens (a kill), the batch
    comes again - a transactional sink must not take it twice (its position was recorded on
    the writer), while the other sinks get it again (at least once)."""
    reader = MemoryReader(batches(3, 2), atomic_writer=False)
    op, cache = Transactional("op"), RecordingSink("cache")
    store = MemoryStore()
    routes = [route("public.items", "op"), route("public.items", "cache", index=1)]
    ack, acks = reader.ack, 0

    async def ack_lost_once(batch):  # type: ignore[no-untyped-def]
        nonlocal acks
        acks += 1
        if acks == 1:
            raise ReaderDisconnected("killed between the writer's commit and the ack")
        await ack(batch)

    reader.ack = ack_lost_once  # type: ignore[method-assign]
    with pytest.raises(ReaderDisconnected):
        await Harness(routes, {"op": op, "cache": cache}, reader, store).run()
    assert op.committed == [0, 1, 2] and store.positions == {"op": (0, 2)}
    assert reader.nacked == [0]
    await Harness(routes, {"op": op, "cache": cache}, reader, store).run()  # a restart
    assert op.committed == [0, 1, 2, 3, 4] and store.positions == {"op": (0, 4)}
    assert cache.positions() == [0, 1, 2, 0, 1, 2, 3, 4]
