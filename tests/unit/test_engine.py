"""The delivery engine (connector/delivery/engine.py) against small in-process publishers
(our own interface, not a mock of an external system): retry, partial failure, dead letters,
parking, retry limits."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from connector.delivery.engine import Delivery
from connector.publishers.base import (
    PartialFailure,
    PermanentError,
    Publisher,
    RetryableError,
)
from connector.publishers.registry import publisher_class
from connector.vocabulary import ChangeEvent, Message, RetryConfig, backoff

FAST = RetryConfig(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)


def msg(i: int, publisher: str = "p") -> Message:
    e = ChangeEvent(i, "public", "t", "insert", b'{"id":"%d"}' % i)
    return Message(publisher, f"c{i}", "insert", e.payload, e)


class Scripted(Publisher):
    """Fails according to a script of per-attempt outcomes, records what got through."""

    type_name = "scripted"

    def __init__(self, name: str, script: list[Exception | None]) -> None:
        super().__init__(name, {})
        self.script = script
        self.delivered: list[int] = []
        self.calls = 0

    async def publish(self, messages: Sequence[Message]) -> None:
        outcome = self.script[self.calls] if self.calls < len(self.script) else None
        self.calls += 1
        if isinstance(outcome, PartialFailure):
            self.delivered += [m.event.position for i, m in enumerate(messages)
                               if i not in outcome.failures]
            raise outcome
        if outcome is not None:
            raise outcome
        self.delivered += [m.event.position for m in messages]


async def test_retryable_error_is_retried() -> None:
    p = Scripted("p", [RetryableError("down"), None])
    out = await Delivery({"p": p}, inline=FAST).deliver([msg(1), msg(2)])
    assert out.dead == [] and out.parked == [] and p.delivered == [1, 2] and p.calls == 2


async def test_parks_after_attempts() -> None:
    p = Scripted("p", [RetryableError("down")] * 5)
    out = await Delivery({"p": p}, inline=FAST).deliver([msg(1), msg(2)])
    assert p.calls == 3 and list(out.stalled) == ["p"] and out.dead == []
    assert [(x.message.event.position, x.error, x.attempts) for x in out.parked] == [
        (1, "down", 3), (2, "down", 3)]


async def test_max_attempts_dead_letters_instead_of_parking() -> None:
    p = Scripted("p", [RetryableError("down")] * 5)
    engine = Delivery({"p": p}, limits={"p": RetryConfig(max_attempts=2)}, inline=FAST)
    out = await engine.deliver([msg(1)])
    assert p.calls == 2 and out.parked == [] and out.stalled == {}
    assert [(d.message.event.position, d.error, d.attempts) for d in out.dead] == [
        (1, "down", 2)]


async def test_permanent_error_dead_letters_the_batch() -> None:
    p = Scripted("p", [PermanentError("rejected")])
    out = await Delivery({"p": p}, inline=FAST).deliver([msg(1), msg(2)])
    assert [(d.message.event.position, d.error, d.attempts) for d in out.dead] == [
        (1, "rejected", 1), (2, "rejected", 1)]


async def test_partial_failure_retries_only_the_retryable_ones() -> None:
    p = Scripted("p", [PartialFailure({0: PermanentError("too big"), 2: RetryableError("x")})])
    out = await Delivery({"p": p}, inline=FAST).deliver([msg(1), msg(2), msg(3)])
    assert [d.message.event.position for d in out.dead] == [1]
    assert p.delivered == [2, 3]


async def test_crashing_adapter_is_treated_as_retryable() -> None:
    p = Scripted("p", [ZeroDivisionError("bug"), None])
    out = await Delivery({"p": p}, inline=FAST).deliver([msg(1)])
    assert out.dead == [] and out.parked == []
    assert p.delivered == [1]


async def test_publishers_are_independent() -> None:
    a, b = Scripted("a", [None]), Scripted("b", [RetryableError("down")] * 5)
    out = await Delivery({"a": a, "b": b}, inline=FAST).deliver([msg(1, "a"), msg(2, "b")])
    assert a.delivered == [1]
    assert list(out.stalled) == ["b"] and [x.message.event.position for x in out.parked] == [2]


def test_registry() -> None:
    assert publisher_class("redis").type_name == "redis"
    assert publisher_class("stdout").type_name == "stdout"
    assert publisher_class("ably").type_name == "ably"
    with pytest.raises(LookupError, match="unknown publisher type 'nope'"):
        publisher_class("nope")


def test_backoff_stays_bounded_after_any_number_of_attempts() -> None:
    # A publisher down for hours is retried thousands of times: 2.0 ** 1024 would overflow.
    for attempt in (1, 2, 10, 1024, 1025, 100_000):
        wait = backoff(attempt, 0.5, 10.0)
        assert 0.25 <= wait <= 10.0
    assert backoff(1, 0.5, 10.0) <= 0.5
