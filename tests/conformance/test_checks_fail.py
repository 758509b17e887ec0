"""Each check of the suite fails against an adapter with the bug it is there to catch.

A check that cannot fail is a defect, so every one runs here against a real adapter with one
bug put in (a subclass), through the very hooks of test_redis.py, test_ably.py and
test_stdout.py, and must fail with the matching complaint."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import orjson
import pytest

from connector.conformance import Message, PublisherConformance
from connector.publishers.ably import AblyPublisher
from connector.publishers.base import PartialFailure, PermanentError, RetryableError
from connector.publishers.redis import RedisPublisher
from connector.publishers.stdout import StdoutPublisher
from tests.conformance import test_ably, test_redis, test_stdout

C = TypeVar("C", bound=type)


def catches(check: str, complaint: str, **params: str) -> Callable[[C], C]:
    """Keep only ``check`` of the suite in the class, which must fail with ``complaint`` (a
    regular expression) in its message; ``params`` pick one value of a parametrised hook."""

    def decorate(cls: C) -> C:
        for name in dir(PublisherConformance):
            if name.startswith("test_"):
                setattr(cls, name, None)  # pytest collects only functions
        original = getattr(PublisherConformance, check)

        @functools.wraps(original)  # the same signature: pytest gives it the same fixtures
        async def must_fail(self: Any, *args: Any, **kwargs: Any) -> None:
            with pytest.raises(pytest.fail.Exception, match=complaint):
                await original(self, *args, **kwargs)

        test: Any = must_fail
        for name, value in params.items():
            test = pytest.mark.parametrize(name, [value], indirect=True)(test)
        setattr(cls, check, test)
        return cls

    return decorate


def _alter(messages: Sequence[Message], change: Callable[[bytes], bytes]) -> list[Message]:
    return [dataclasses.replace(m, payload=change(m.payload)) for m in messages]


# ------------------------------------------------------------------ order, exactly once


class Reversing(RedisPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        await super().publish(messages[::-1])


class Dropping(RedisPublisher):
    dropped = False  # of all instances: a lost fence would only make the check slower

    async def publish(self, messages: Sequence[Message]) -> None:
        if not Dropping.dropped and len(messages) > 5:
            Dropping.dropped = True
            messages = [m for i, m in enumerate(messages) if i != 5]
        await super().publish(messages)


class Repeating(RedisPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        await super().publish(messages)
        await super().publish(messages[-1:])


@catches("test_order_per_channel", "first difference at position 0")
class TestOrderCatchesReordering(test_redis.TestRedisPubsub):
    publisher_class = Reversing


@catches("test_order_per_channel", "first difference at position 1: expected b6, received b10")
class TestOrderCatchesALostMessage(test_redis.TestRedisStream):
    publisher_class = Dropping


@catches("test_order_per_channel", "arrived 2 times")
class TestOrderCatchesDuplicates(test_redis.TestRedisPubsub):
    publisher_class = Repeating


# ------------------------------------------------------------------ outage


class GivingUp(RedisPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        try:
            await super().publish(messages)
        except RetryableError as exc:
            raise PermanentError(str(exc)) from None


class Leaking(RedisPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        try:
            await super().publish(messages)
        except RetryableError as exc:
            raise ConnectionResetError(str(exc)) from None


class Pretending(RedisPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        with contextlib.suppress(RetryableError):  # and says it was delivered
            await super().publish(messages)


@catches("test_outage_then_recovery", "it must raise RetryableError", outage="down")
class TestOutageCatchesGivingUp(test_redis.TestRedisPubsub):
    publisher_class = GivingUp


@catches("test_outage_then_recovery", "publish raised ConnectionResetError", outage="down")
class TestOutageCatchesLeakedErrors(test_redis.TestRedisStream):
    publisher_class = Leaking


@catches("test_outage_then_recovery", "it returned normally", outage="down")
class TestOutageCatchesPretendedDelivery(test_redis.TestRedisPubsub):
    publisher_class = Pretending


@catches("test_outage_then_recovery", "did not return within 1.5 s", outage="silent")
class TestOutageCatchesHanging(test_redis.TestRedisPubsub):
    publisher_options: ClassVar[dict[str, Any]] = {"timeout": 60}  # waits out the outage
    publish_timeout = 1.5


# ------------------------------------------------------------------ partial failure


class OverReporting(AblyPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        try:
            await super().publish(messages)
        except PartialFailure as exc:
            error = next(iter(exc.failures.values()))
            raise PartialFailure(dict.fromkeys(range(len(messages)), error)) from None


class UnderReporting(AblyPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        try:
            await super().publish(messages)
        except PartialFailure as exc:
            first = min(exc.failures)
            raise PartialFailure({first: exc.failures[first]}) from None


@catches("test_partial_failure_resends_only_the_failed", r"names messages \[0, 1, 2,",
         partial_failure="500")
class TestPartialCatchesOverReporting(test_ably.TestAbly):
    publisher_class = OverReporting


@catches("test_partial_failure_resends_only_the_failed", r"names messages \[1\]; the partial",
         partial_failure="500-legacy-response")
class TestPartialCatchesUnderReporting(test_ably.TestAbly):
    publisher_class = UnderReporting


# ------------------------------------------------------------------ permanent error


class Retrying(RedisPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        try:
            await super().publish(messages)
        except PartialFailure as exc:
            raise PartialFailure({i: RetryableError(str(e))
                                  for i, e in exc.failures.items()}) from None


class FailingTheBatch(AblyPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        try:
            await super().publish(messages)
        except PartialFailure as exc:
            raise PermanentError(str(exc)) from None


@catches("test_permanent_error_dead_letters_only_its_message", "it must raise PermanentError",
         rejected_message="wrong-type")
class TestPermanentCatchesRetryingRefusals(test_redis.TestRedisStream):
    publisher_class = Retrying


@catches("test_permanent_error_dead_letters_only_its_message", "PermanentError for index 2 only",
         rejected_message="forbidden")
class TestPermanentCatchesDeadLetteringTheBatch(test_ably.TestAbly):
    publisher_class = FailingTheBatch


# ------------------------------------------------------------------ close


class ClosingOnce(RedisPublisher):
    closed = False

    async def close(self) -> None:
        if self.closed:
            raise RuntimeError("already closed")
        self.closed = True
        await super().close()


@catches("test_close_is_idempotent", "a second close.. before open.. raised RuntimeError")
class TestCloseCatchesASecondCloseRaising(test_redis.TestRedisPubsub):
    publisher_class = ClosingOnce


# ------------------------------------------------------------------ bytes


class Truncating(RedisPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        await super().publish(_alter(messages, lambda p: p[:512 * 1024]))


class Normalising(StdoutPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        await super().publish(_alter(
            messages, lambda p: unicodedata.normalize("NFC", p.decode()).encode()))


class Reencoding(AblyPublisher):
    async def publish(self, messages: Sequence[Message]) -> None:
        await super().publish(_alter(messages, lambda p: orjson.dumps(orjson.loads(p))))


@catches("test_large_message_survives", "an unknown payload of 524288 bytes")
class TestLargeCatchesTruncation(test_redis.TestRedisStream):
    publisher_class = Truncating


@catches("test_unicode_survives_byte_for_byte", r"combining.* arrived altered|a\d+ arrived altered")
class TestUnicodeCatchesNormalisation(test_stdout.TestStdout):
    publisher_class = Normalising


@catches("test_unicode_survives_byte_for_byte", r"a\d+ arrived altered: \d+ bytes sent")
class TestUnicodeCatchesReencoding(test_ably.TestAbly):
    publisher_class = Reencoding
