"""The publisher conformance suite: what every publisher adapter must do, checked against its
real system.

The daemon relies on a small contract (``connector.publishers.base``): ``open()``,
``publish(messages)`` that delivers the batch in order or raises ``RetryableError``,
``PermanentError`` or ``PartialFailure({index: error})``, and ``close()``. This module checks an
adapter keeps it, by publishing to the system and reading back what the system received. Every
built-in adapter runs it (tests/conformance/); a third-party adapter runs it the same way.

The checks
==========

Every check publishes messages whose payloads are JSON events (like the daemon's) that say
which message they are, then publishes a *fence* on each channel and waits for it: per-channel
order means everything published before the fence has arrived once the fence has, so "exactly
once" is checked without guessing how long to wait. What arrived is compared byte for byte, and
each payload carries JSON that parsing and serialising again would change (spacing, a number
beyond a float, escapes): an adapter passes the payload on as it is. Each ``publish``, ``open``
and ``close`` must return or raise within ``publish_timeout`` seconds, and ``publish`` may raise
nothing but ``RetryableError``, ``PermanentError`` and ``PartialFailure`` (whose failures are
RetryableError or PermanentError, at indices of the batch). The suite re-sends what failed
itself, using only that contract, as the daemon would.

``test_order_per_channel``
    Batches that interleave several channels, and a batch over many channels (more than a
    request of some systems holds), arrive in order per channel, each message exactly once.
``test_outage_then_recovery`` (hook ``outage``)
    While the system is unreachable, ``publish`` raises RetryableError (or a PartialFailure of
    only RetryableErrors for every message) - not another error, not success, and it does not
    hang; twice in a row (the first try may meet the old connection, the second must make a
    new one); ``open`` of a new publisher raises RetryableError or returns. After the system is
    back, publishing the failed batch again (the suite retries for up to ``recovery_timeout``)
    delivers it, and the same publisher and the new one deliver more. Nothing is lost and order
    per channel is kept; the batch that failed may arrive twice (a RetryableError means
    "nothing certain was delivered"), the others exactly once.
``test_partial_failure_resends_only_the_failed`` (hook ``partial_failure``)
    When the system fails some messages of a batch for a time, ``publish`` raises a
    PartialFailure whose indices are exactly those messages (when the hook says which), all
    RetryableError. Re-sending only those delivers them; every other message arrives exactly
    once, and order per channel holds (an adapter must not deliver a channel's later messages
    past a failed one: it reports those as failed too).
``test_permanent_error_dead_letters_only_its_message`` (hook ``rejected_message``)
    A message the system refuses for good (too large, forbidden) gives PermanentError when
    published alone (or a PartialFailure of it), and, in the middle of a batch, a PartialFailure
    with only its index, a PermanentError; the rest of that batch is delivered by that very
    publish, exactly once, in order.
``test_close_is_idempotent``
    ``close`` twice on a publisher never opened, and twice after publishing, returns without
    raising.
``test_large_message_survives``
    Messages of ``large_message_bytes`` (1 MiB unless the system allows less), mixed with
    small ones, arrive byte for byte.
``test_unicode_survives_byte_for_byte``
    Payloads with emoji (non-BMP, ZWJ sequences, flags), combining marks that must not be
    normalised, right-to-left text and controls, U+2028/U+2029, a BOM, noncharacters and JSON
    escapes arrive byte for byte.

Channels are ASCII: ``<channel_prefix>:<label>``, unique per test.

Running it against an adapter
=============================

Subclass ``PublisherConformance`` in a test module, in a class whose name starts with ``Test``,
and override the hook fixtures (pytest fixtures, so a hook may use your own fixtures)::

    import pytest
    from connector.conformance import PublisherConformance, Receiver, not_applicable

    class TestMyPublisher(PublisherConformance):
        large_message_bytes = 256 * 1024     # the system's limit, if under 1 MiB

        @pytest.fixture
        def make_publisher(self, my_server):      # required
            return lambda: MyPublisher("conformance", {"url": my_server.url, "timeout": 1})

        @pytest.fixture
        def receiver(self, my_server, channel_prefix):  # required
            return MyReceiver(my_server.url, channel_prefix)

        @pytest.fixture(params=["down", "silent"])     # one run per kind of outage
        def outage(self, request, my_server): ...

        rejected_message = not_applicable("my system accepts every message")
        partial_failure = not_applicable("one request per batch: all of it fails, or none")

The hooks:

``make_publisher`` -> ``Callable[[], Publisher]``
    Makes a new publisher, *not* opened: the suite opens it (and checks ``close`` before
    ``open``). It may be called several times in one test; each one is closed at the end.
    Give it short timeouts (1 s) so the outage check is quick.
``receiver`` -> ``Receiver``
    Reads back what the system received. ``start()`` runs before the first publish (subscribe
    there: pub/sub forgets what nobody heard), ``received(channel)`` returns the payloads
    delivered on ``channel`` so far, in order, as bytes (what a consumer would get), and
    ``stop()`` runs at the end. It must read the system directly, not through the path an
    outage cuts. Where the system drops a repeated message id (as Ably does), report what a
    subscriber gets.
``channel_prefix`` -> ``str``
    The prefix of every channel of the test (defined here; override only to change its form).
``outage`` -> ``Callable[[], AbstractAsyncContextManager[None]]``
    An async context manager: on entering it the system becomes unreachable for the
    publisher, on leaving it reachable again (return once it is). Parametrise the fixture to
    run the check for several kinds (refused or reset connections, a silent network).
``rejected_message`` -> ``Callable[[Kit], AbstractAsyncContextManager[Message]]``
    Yields a message the system rejects permanently while the context is open; build it with
    ``kit.message(channel, ...)``. The suite's good messages go to ``kit.channel("a")`` and
    ``kit.channel("b")``: a message rejected for its size may go there too, one rejected for its
    channel needs its own. The hook may stay open for several publishes.
``partial_failure`` -> ``Callable[[Sequence[Message]], AbstractAsyncContextManager[...]]``
    Given the batch about to be published (several channels, interleaved), makes the system
    fail some but not all of its messages retryably in the next publish, and yields the indices
    it expects the adapter to report (a ``Collection[int]``, or None when it cannot know). On
    leaving, the system accepts them again.

A hook the system cannot provide is declared with ``not_applicable(reason)`` (or a fixture
that returns None): its check is skipped with that reason. A hook left undeclared fails the
check, so a forgotten hook never passes silently. The checks' own fixtures are plain (not
async), and hooks only return callables and objects the checks call on the test's event loop,
so your hook fixtures may be sync or async as your pytest-asyncio mode allows.

For checks of your own, ``self.session(make_publisher, receiver, channel_prefix)`` gives the
suite's tools: ``open()`` a publisher, ``attempt()`` one bounded publish, ``deliver()`` with
re-sending, ``settle()`` to compare what arrived, and ``kit`` to make messages.

Tunables (class attributes): ``publish_timeout`` (10 s: the longest ``open``, ``publish`` or
``close`` may take), ``delivery_timeout`` (10 s: how long the receiver may take to see a
message), ``recovery_timeout`` (30 s: how long the suite retries after an outage),
``large_message_bytes``.

Run it with pytest (``pytest tests/conformance`` here, ``pytest`` in your package). It needs
``pytest`` and ``pytest-asyncio`` (the checks are marked ``asyncio``, so the plugin's strict
mode works too). pytest is imported at the top of this module only: the daemon never imports
``connector.conformance``, so pgconnector runs without pytest installed, and importing this
module without it raises an ImportError that says what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, NoReturn, TypeVar

import orjson

try:
    import pytest
except ImportError:  # pragma: no cover - the daemon's own install has no pytest
    raise ImportError("connector.conformance is a pytest suite: install pytest and "
                      "pytest-asyncio to run it (pip install 'pgconnector[test]')") from None

from connector.publishers.base import (
    PartialFailure,
    PermanentError,
    Publisher,
    PublishError,
    RetryableError,
)
from connector.vocabulary import ChangeEvent, Message  # Message is re-exported: hooks build them

__all__ = [
    "UNICODE_SAMPLES",
    "Kit",
    "Message",
    "Outage",
    "PartialFault",
    "PublisherConformance",
    "PublisherFactory",
    "Receiver",
    "Rejection",
    "Session",
    "not_applicable",
]

T = TypeVar("T")

PublisherFactory = Callable[[], Publisher]
Outage = Callable[[], AbstractAsyncContextManager[None]]
Rejection = Callable[["Kit"], AbstractAsyncContextManager[Message]]
PartialFault = Callable[[Sequence[Message]], AbstractAsyncContextManager[Collection[int] | None]]

#: Texts the unicode check sends. Non-BMP characters are written as raw UTF-8 (4 bytes each),
#: decomposed marks must not be normalised to NFC, bidi controls must not be stripped.
UNICODE_SAMPLES: tuple[str, ...] = (
    "emoji 😀 🦄 👩🏽\u200d🚀 👨\u200d👩\u200d👧\u200d👦 🏳\ufe0f\u200d🌈 🇺🇳 🫠",
    "astral 𠀀 𪚥 \U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594 𓀀 𝄞 🀄",
    "combining e\u0301 a\u0308\u0323 Z\u0351\u0352\u0353\u0354 n\u0303 vs \u00e9 \u00f1",
    "rtl שלום עולם \u200f مرحبا بالعالم \u202eevil\u202c \u2067isolate\u2069",
    "controls \u2028 \u2029 \ufeff \u200b \u200d \u00a0 \ufffd \uffff \U0010fffd",
    'escapes quote " backslash \\ tab \t newline \n nul \u0000 bell \u0007 slash /',
)

_FENCE = "fence"

# Spliced into every payload: JSON that parsing and serialising again would change (spacing,
# a number beyond a float, 1.0 and 1E+3, escapes), so an adapter re-encoding payloads fails.
_NOT_CANONICAL = (b'{ "numeric" : 123456789012345678901234567890.123456789012345678901 ,'
                  b' "float" : 1.0, "exp" : 1E+3, "escaped" : "\\u00e9 \\ud83d\\ude00 \\/" }')


def not_applicable(reason: str) -> Any:
    """A hook fixture declaring the system cannot do what the hook asks: the checks needing it
    are skipped with ``reason`` (say why, for whoever reads the test report)."""

    def hook(self: Any) -> NoReturn:
        pytest.skip(reason)

    return pytest.fixture(hook)


class Receiver(ABC):
    """Reads back, from the system itself, what was delivered on each channel."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Before the first publish of a test: subscribe, connect."""

    @abstractmethod
    async def received(self, channel: str) -> Sequence[bytes]:
        """The payloads delivered on ``channel`` so far, in order, as a consumer gets them."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """After the test: unsubscribe, disconnect, clean up."""


class Kit:
    """Makes one test's channels and messages, and names payloads for diagnostics."""

    def __init__(self, prefix: str, publisher: str = "conformance") -> None:
        self.prefix = prefix
        self.publisher = publisher
        self._seq = 0
        self._labels: dict[bytes, str] = {}
        self._payloads: dict[str, bytes] = {}

    def channel(self, label: str) -> str:
        return f"{self.prefix}:{label}"

    def message(self, channel: str, *, label: str | None = None, text: str = "",
                size: int | None = None, name: str = "insert") -> Message:
        """A new message on ``channel``: a JSON event, unique, carrying ``text``, exactly
        ``size`` bytes long if given (padded with mixed 1- to 4-byte characters). Its payload
        is not in canonical form (see ``_NOT_CANONICAL``): an adapter must pass it on as is."""
        self._seq += 1
        seq = self._seq
        label = label or f"{channel.rpartition(':')[2]}{seq}"
        if label in self._payloads:
            raise ValueError(f"label {label!r} is taken")
        event_id = f"{self.prefix}-{seq}"

        def encode(pad: str) -> bytes:
            head = orjson.dumps({"id": event_id, "op": name, "schema": "public",
                                 "table": "conformance", "key": {"seq": seq},
                                 "new": {"seq": seq, "label": label, "text": text, "pad": pad},
                                 "old": None})
            return head[:-1] + b',"exact":' + _NOT_CANONICAL + b"}"

        payload = encode("")
        if size is not None:
            if size < len(payload):
                raise ValueError(f"a message cannot be under {len(payload)} bytes")
            payload = encode(_filler(size - len(payload)))
            assert len(payload) == size
        self._labels[payload] = label
        self._payloads[label] = payload
        event = ChangeEvent(position=seq, schema="public", table="conformance", op=name,
                            payload=payload, key=("seq",), event_id=event_id)
        return Message(self.publisher, channel, name, payload, event)

    def label(self, payload: bytes) -> str:
        """The message's label; ``<label>(altered)`` when the bytes differ from what was sent
        but still name a message; ``?`` when they name none."""
        known = self._labels.get(bytes(payload))
        if known is not None:
            return known
        with contextlib.suppress(Exception):
            label = orjson.loads(payload)["new"]["label"]
            if isinstance(label, str) and label in self._payloads:
                return f"{label}(altered)"
        return "?"

    def explain(self, payload: bytes) -> str:
        """How a received payload differs from the one sent."""
        label = self.label(payload).removesuffix("(altered)")
        sent = self._payloads.get(label)
        got = bytes(payload)
        if sent is None:
            return f"an unknown payload of {len(got)} bytes: {got[:80]!r}"
        at = next((i for i, (x, y) in enumerate(zip(sent, got, strict=False)) if x != y),
                  min(len(sent), len(got)))
        return (f"{label} arrived altered: {len(sent)} bytes sent, {len(got)} received; first "
                f"difference at byte {at}: sent {sent[at:at + 24]!r}, received "
                f"{got[at:at + 24]!r}")


def _filler(n: int) -> str:
    """Exactly ``n`` UTF-8 bytes of text JSON does not escape, mixing 1-, 2-, 3- and 4-byte
    characters, so a payload split into chunks anywhere is likely to split a character."""
    pieces = ("abcdefghijklmnopqrstuvwxyz0123456789" * 28, "é", "€", "𝄞")
    out: list[str] = []
    left = n
    for i in range(n):
        piece = pieces[i % len(pieces)]
        size = len(piece.encode())
        if size > left:
            break
        out.append(piece)
        left -= size
    out.append("z" * left)
    return "".join(out)


def _failures(error: PublishError, n: int) -> dict[int, PublishError]:
    """The error of each failed message of a batch of ``n``."""
    if isinstance(error, PartialFailure):
        return dict(error.failures)
    return dict.fromkeys(range(n), error)


def _describe(error: PublishError | None) -> str:
    if error is None:
        return "it returned normally"
    if isinstance(error, PartialFailure):
        kinds = sorted({type(e).__name__ for e in error.failures.values()})
        return (f"PartialFailure of {sorted(error.failures)} ({', '.join(kinds)}): "
                f"{next(iter(error.failures.values()))}")
    return f"{type(error).__name__}: {error}"


def _check_shape(error: PublishError, n: int) -> None:
    """Fail unless ``error`` is one a publish may raise for a batch of ``n``."""
    if isinstance(error, PartialFailure):
        if not error.failures:
            pytest.fail("publish raised a PartialFailure listing no failed message")
        for index, err in error.failures.items():
            if not (isinstance(index, int) and 0 <= index < n):
                pytest.fail(f"PartialFailure names index {index!r}, not one of the batch's "
                            f"{n} messages")
            if isinstance(err, PartialFailure) or not isinstance(
                    err, RetryableError | PermanentError):
                pytest.fail(f"PartialFailure's error for message {index} is "
                            f"{type(err).__name__}, not a RetryableError or PermanentError")
            _check_shape(err, n)
    elif isinstance(error, RetryableError):
        wait = error.retry_after
        if not (isinstance(wait, int | float) and math.isfinite(wait) and wait >= 0):
            pytest.fail(f"RetryableError.retry_after is {wait!r}, not a finite number >= 0")
    elif not isinstance(error, PermanentError):
        pytest.fail(f"publish raised {type(error).__name__} ({error}): a plain PublishError "
                    "says neither retry nor give up; raise RetryableError or PermanentError")


class Session:
    """One test's publishers, receiver and messages, and the suite's own re-sending.

    Use it in extra, adapter-specific checks: ``async with suite.session(make_publisher,
    receiver, channel_prefix) as s``."""

    def __init__(self, suite: PublisherConformance, make_publisher: PublisherFactory,
                 receiver: Receiver, prefix: str) -> None:
        self.suite = suite
        self.make_publisher = make_publisher
        self.receiver = receiver
        self.kit = Kit(prefix)
        self.publishers: list[Publisher] = []
        self._fences: dict[str, set[str]] = {}  # labels of the fences published per channel
        self._settles = 0

    async def __aenter__(self) -> Session:
        await self.bounded(self.receiver.start(), "the receiver's start()")
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            for publisher in self.publishers:
                if exc is None:
                    await self.close(publisher)
                else:  # the test failed already: do not hide why behind a close error
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(publisher.close(), self.suite.publish_timeout)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.receiver.stop(), self.suite.publish_timeout)

    async def bounded(self, awaitable: Awaitable[T], what: str) -> T:
        """``awaitable``'s result; fails the check if it takes over ``publish_timeout``."""
        limit = self.suite.publish_timeout
        try:
            async with asyncio.timeout(limit) as scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                pytest.fail(f"{what} did not return within {limit:g} s")
            raise

    def new(self) -> Publisher:
        """A new publisher, not opened; closed at the end of the test."""
        publisher = self.make_publisher()
        if not isinstance(publisher, Publisher):
            pytest.fail(f"make_publisher returned {type(publisher).__name__}, not a Publisher")
        self.publishers.append(publisher)
        return publisher

    async def open(self) -> Publisher:
        """A new, opened publisher (its system is reachable: ``open`` must succeed)."""
        publisher = self.new()
        try:
            await self.bounded(publisher.open(), "open()")
        except Exception as exc:
            pytest.fail(f"open() raised {type(exc).__name__}: {exc}")
        return publisher

    async def close(self, publisher: Publisher, what: str = "close()") -> None:
        try:
            await self.bounded(publisher.close(), what)
        except Exception as exc:
            pytest.fail(f"{what} raised {type(exc).__name__}: {exc} (close must not raise)")

    async def attempt(self, publisher: Publisher, batch: Sequence[Message]) -> PublishError | None:
        """Publish once: None if delivered, else the (well-formed) error."""
        try:
            await self.bounded(publisher.publish(list(batch)), f"publish of {len(batch)} "
                                                               "message(s)")
        except PublishError as exc:
            _check_shape(exc, len(batch))
            return exc
        except Exception as exc:
            pytest.fail(f"publish raised {type(exc).__name__}: {exc} (only RetryableError, "
                        "PermanentError and PartialFailure may come out of publish)")
        return None

    async def deliver(self, publisher: Publisher, batch: Sequence[Message],
                      within: float | None = None) -> None:
        """Publish ``batch``, re-sending only what failed retryably, until all of it is
        delivered (``within`` seconds at most: ``recovery_timeout``). Fails on a dead letter:
        the suite delivers only messages the system accepts."""
        limit = self.suite.recovery_timeout if within is None else within
        deadline = time.monotonic() + limit
        pending = list(batch)
        backoff = 0.05
        while pending:
            error = await self.attempt(publisher, pending)
            if error is None:
                return
            failures = _failures(error, len(pending))
            for index, err in failures.items():
                if isinstance(err, PermanentError):
                    pytest.fail(f"{self.kit.label(pending[index].payload)} was rejected as "
                                f"permanent ({err}), but the system accepts it")
            if time.monotonic() > deadline:
                pytest.fail(f"still failing after {limit:g} s: {_describe(error)}")
            waits = [e.retry_after for e in failures.values() if isinstance(e, RetryableError)]
            await asyncio.sleep(max(backoff, min(max(waits, default=0.0), 2.0)))
            backoff = min(backoff * 2, 0.5)
            pending = [pending[i] for i in sorted(failures)]

    async def settle(self, expected: Mapping[str, Sequence[Message]],
                     at_least_once: Collection[Message] = ()) -> None:
        """Check each channel received exactly its ``expected`` messages, in order, once each
        (``at_least_once`` ones - a RetryableError left them uncertain - at least once).

        A fence is published on every channel (by a new publisher) and awaited first: with
        per-channel order, everything published before it has arrived once it has."""
        self._settles += 1
        fences = {ch: self.kit.message(ch, label=f"{_FENCE}{self._settles}:{ch}")
                  for ch in expected}
        for ch, fence in fences.items():
            self._fences.setdefault(ch, set()).add(self.kit.label(fence.payload))
        await self.deliver(await self.open(), list(fences.values()))
        deadline = time.monotonic() + self.suite.delivery_timeout
        pending = dict(fences)
        got: dict[str, list[bytes]] = {}
        while True:
            for ch, fence in list(pending.items()):
                got[ch] = list(await self.receiver.received(ch))
                if any(self._fence_of(p, fence) for p in got[ch]):  # even altered: say how
                    del pending[ch]
            if not pending:
                break
            if time.monotonic() > deadline:
                ch = next(iter(pending))
                pytest.fail(f"channel {ch}: nothing published after the test's messages "
                            f"arrived within {self.suite.delivery_timeout:g} s (delivery or "
                            f"order is broken); received: {self._labels(got[ch])}")
            await asyncio.sleep(0.02)
        for ch in expected:  # read again: a late duplicate may have come after the fence
            got[ch] = list(await self.receiver.received(ch))
        uncertain = {m.payload for m in at_least_once}
        for ch, want in expected.items():
            self._compare(ch, [m.payload for m in want], got[ch], fences[ch], uncertain)

    def _is_fence(self, payload: bytes, channel: str) -> bool:
        """Whether ``payload`` is a fence (of this or an earlier settle), even altered."""
        return self.kit.label(payload).removesuffix("(altered)") in self._fences.get(channel, ())

    def _fence_of(self, payload: bytes, fence: Message) -> bool:
        """Whether ``payload`` is ``fence``, even altered."""
        return (self.kit.label(payload).removesuffix("(altered)")
                == self.kit.label(fence.payload))

    def _labels(self, payloads: Sequence[bytes], limit: int = 40) -> str:
        labels = [self.kit.label(p) for p in payloads]
        more = f" ... ({len(labels)} in all)" if len(labels) > limit else ""
        return "[" + " ".join(labels[:limit]) + more + "]"

    def _compare(self, channel: str, want: list[bytes], got: list[bytes], fence: Message,
                 uncertain: set[bytes]) -> None:
        fences = [p for p in got if self._fence_of(p, fence)]
        got = [p for p in got if not self._is_fence(p, channel)]
        wanted = set(want)
        counts = Counter(got)
        problems = [self.kit.explain(p) for p in counts if p not in wanted]
        if fences != [fence.payload]:
            problems.append(f"the fence arrived {len(fences)} times"
                            if fence.payload in fences else self.kit.explain(fences[0]))
        problems += [f"{self.kit.label(p)} arrived {n} times" for p, n in counts.items()
                     if n > 1 and p in wanted and p not in uncertain]
        firsts = list(dict.fromkeys(got))  # duplicates allowed above are judged by their first
        if firsts != want and not problems:
            at = next((i for i, (x, y) in enumerate(zip(want, firsts, strict=False)) if x != y),
                      min(len(want), len(firsts)))
            sent = self.kit.label(want[at]) if at < len(want) else "nothing more"
            came = self.kit.label(firsts[at]) if at < len(firsts) else "nothing more"
            problems.append(f"first difference at position {at}: expected {sent}, "
                            f"received {came}")
        if problems:
            once = " (or, where a RetryableError left it uncertain, at least once)" * bool(
                uncertain)
            pytest.fail(f"channel {channel}: it did not receive each message exactly once{once}"
                        f", in order: {'; '.join(problems)}\n"
                        f"  published: {self._labels(want)}\n"
                        f"  received:  {self._labels(got)}")


def _interleave(kit: Kit, channels: Sequence[str], per_channel: int, **options: Any
                ) -> list[Message]:
    """``per_channel`` messages on each channel, round robin: a0 b0 c0 a1 b1 c1 ..."""
    return [kit.message(ch, **options) for _ in range(per_channel) for ch in channels]


def _by_channel(*batches: Sequence[Message]) -> dict[str, list[Message]]:
    out: dict[str, list[Message]] = {}
    for batch in batches:
        for m in batch:
            out.setdefault(m.channel, []).append(m)
    return out


class PublisherConformance:
    """The suite: subclass it (``class Test...``) and override the hook fixtures; see this
    module's docstring for what each check means and what each hook must do."""

    pytestmark: ClassVar[list[Any]] = [pytest.mark.asyncio]

    #: the longest ``open``, ``publish`` or ``close`` may take, seconds
    publish_timeout: ClassVar[float] = 10.0
    #: how long a delivered message may take to show in the receiver, seconds
    delivery_timeout: ClassVar[float] = 10.0
    #: how long the suite keeps re-sending after an outage ends, seconds
    recovery_timeout: ClassVar[float] = 30.0
    #: payload size of the large-message check (set the system's limit if it is lower)
    large_message_bytes: ClassVar[int] = 1024 * 1024

    # ---------------------------------------------------------------- hooks (override)

    @pytest.fixture
    def make_publisher(self) -> PublisherFactory:
        pytest.fail(f"{type(self).__name__} must override the make_publisher fixture "
                    "(a function returning a new, unopened publisher)")

    @pytest.fixture
    def receiver(self) -> Receiver:
        pytest.fail(f"{type(self).__name__} must override the receiver fixture (a Receiver "
                    "reading what the system got)")

    @pytest.fixture
    def channel_prefix(self) -> str:
        return f"pgc{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def outage(self) -> Outage | None:
        pytest.fail(f"{type(self).__name__} must override the outage fixture, or declare "
                    "it with not_applicable(reason)")

    @pytest.fixture
    def rejected_message(self) -> Rejection | None:
        pytest.fail(f"{type(self).__name__} must override the rejected_message fixture, or "
                    "declare it with not_applicable(reason)")

    @pytest.fixture
    def partial_failure(self) -> PartialFault | None:
        pytest.fail(f"{type(self).__name__} must override the partial_failure fixture, or "
                    "declare it with not_applicable(reason)")

    def session(self, make_publisher: PublisherFactory, receiver: Receiver,
                channel_prefix: str) -> Session:
        return Session(self, make_publisher, receiver, channel_prefix)

    # ---------------------------------------------------------------- checks

    async def test_order_per_channel(self, make_publisher: PublisherFactory, receiver: Receiver,
                                     channel_prefix: str) -> None:
        async with self.session(make_publisher, receiver, channel_prefix) as s:
            p = await s.open()
            few = [s.kit.channel(c) for c in "abcd"]
            first = _interleave(s.kit, few, 25)
            second = _interleave(s.kit, few, 5)
            many = _interleave(s.kit, [s.kit.channel(f"w{n}") for n in range(120)], 2)
            for batch in (first, second, many):
                await s.deliver(p, batch)
            await s.settle(_by_channel(first, second, many))

    async def test_outage_then_recovery(self, make_publisher: PublisherFactory,
                                        receiver: Receiver, channel_prefix: str,
                                        outage: Outage | None) -> None:
        if outage is None:
            pytest.skip("no outage hook")
        async with self.session(make_publisher, receiver, channel_prefix) as s:
            chans = [s.kit.channel("a"), s.kit.channel("b")]
            p = await s.open()
            before = _interleave(s.kit, chans, 3)
            await s.deliver(p, before)
            during = _interleave(s.kit, chans, 3)
            late = s.new()
            late_opened = True
            async with outage():
                for attempt in ("first", "second"):
                    error = await s.attempt(p, during)
                    failures = _failures(error, len(during)) if error is not None else {}
                    if (len(failures) != len(during)
                            or not all(isinstance(e, RetryableError) for e in failures.values())):
                        pytest.fail(f"the {attempt} publish while the system was unreachable: "
                                    f"{_describe(error)}; it must raise RetryableError")
                try:
                    await s.bounded(late.open(), "open() while the system was unreachable")
                except RetryableError:
                    late_opened = False
                except Exception as exc:
                    pytest.fail(f"open() while the system was unreachable raised "
                                f"{type(exc).__name__}: {exc}, not RetryableError")
            await s.deliver(p, during)
            after = _interleave(s.kit, chans, 3)
            await s.deliver(p, after)
            deadline = time.monotonic() + self.recovery_timeout
            while not late_opened:
                try:
                    await s.bounded(late.open(), "open()")
                    late_opened = True
                except RetryableError as exc:
                    if time.monotonic() > deadline:
                        pytest.fail(f"open() still fails {self.recovery_timeout:g} s after the "
                                    f"outage: {exc}")
                    await asyncio.sleep(0.1)
            fresh = _interleave(s.kit, chans, 2)
            await s.deliver(late, fresh)
            await s.settle(_by_channel(before, during, after, fresh), at_least_once=during)

    async def test_partial_failure_resends_only_the_failed(
            self, make_publisher: PublisherFactory, receiver: Receiver, channel_prefix: str,
            partial_failure: PartialFault | None) -> None:
        if partial_failure is None:
            pytest.skip("no partial_failure hook")
        async with self.session(make_publisher, receiver, channel_prefix) as s:
            p = await s.open()
            batch = _interleave(s.kit, [s.kit.channel(c) for c in "abc"], 12)
            async with partial_failure(batch) as expected:
                error = await s.attempt(p, batch)
            if not isinstance(error, PartialFailure):
                pytest.fail(f"publish of a batch the system partly failed: {_describe(error)}; "
                            "it must raise PartialFailure naming the failed messages")
            failed = sorted(error.failures)
            if expected is not None and set(failed) != set(expected):
                pytest.fail(f"PartialFailure names messages {failed}; the partial_failure hook "
                            f"expects {sorted(expected)}")
            if len(failed) == len(batch):
                pytest.fail("PartialFailure names every message: the hook must fail only some")
            wrong = {i: e for i, e in error.failures.items() if not isinstance(e, RetryableError)}
            if wrong:
                pytest.fail(f"messages the system failed for a time are reported as "
                            f"{_describe(PartialFailure(wrong))}, not RetryableError")
            resent = [batch[i] for i in failed]
            await s.deliver(p, resent)
            await s.settle(_by_channel(batch), at_least_once=resent)

    async def test_permanent_error_dead_letters_only_its_message(
            self, make_publisher: PublisherFactory, receiver: Receiver, channel_prefix: str,
            rejected_message: Rejection | None) -> None:
        if rejected_message is None:
            pytest.skip("no rejected_message hook")
        async with self.session(make_publisher, receiver, channel_prefix) as s:
            a, b = s.kit.channel("a"), s.kit.channel("b")
            p = await s.open()
            async with rejected_message(s.kit) as bad:
                error = await s.attempt(p, [bad])
                failures = _failures(error, 1) if error is not None else {}
                if not isinstance(failures.get(0), PermanentError):
                    pytest.fail(f"publish of a message the system rejects for good: "
                                f"{_describe(error)}; it must raise PermanentError")
                batch = [s.kit.message(a), s.kit.message(b), bad, s.kit.message(a),
                         s.kit.message(b)]
                error = await s.attempt(p, batch)
                failures = _failures(error, len(batch)) if error is not None else {}
                if (not isinstance(error, PartialFailure) or set(failures) != {2}
                        or not isinstance(failures[2], PermanentError)):
                    pytest.fail(f"publish of a batch whose message 2 the system rejects for "
                                f"good: {_describe(error)}; it must raise PartialFailure with "
                                "a PermanentError for index 2 only")
            await s.settle(_by_channel([m for m in batch if m is not bad]))

    async def test_close_is_idempotent(self, make_publisher: PublisherFactory,
                                       receiver: Receiver, channel_prefix: str) -> None:
        async with self.session(make_publisher, receiver, channel_prefix) as s:
            never = s.new()
            await s.close(never, "close() before open()")
            await s.close(never, "a second close() before open()")
            p = await s.open()
            sent = [s.kit.message(s.kit.channel("a"))]
            await s.deliver(p, sent)
            await s.close(p, "close() after publishing")
            await s.close(p, "a second close() after publishing")
            await s.settle(_by_channel(sent))

    async def test_large_message_survives(self, make_publisher: PublisherFactory,
                                          receiver: Receiver, channel_prefix: str) -> None:
        async with self.session(make_publisher, receiver, channel_prefix) as s:
            a, b = s.kit.channel("a"), s.kit.channel("b")
            size = self.large_message_bytes
            batch = [s.kit.message(a, size=size), s.kit.message(a),
                     s.kit.message(a, size=size), s.kit.message(b, size=size)]
            p = await s.open()
            await s.deliver(p, batch)
            alone = [s.kit.message(b, size=size)]
            await s.deliver(p, alone)
            await s.settle(_by_channel(batch, alone))

    async def test_unicode_survives_byte_for_byte(self, make_publisher: PublisherFactory,
                                                  receiver: Receiver,
                                                  channel_prefix: str) -> None:
        async with self.session(make_publisher, receiver, channel_prefix) as s:
            a = s.kit.channel("a")
            batch = [s.kit.message(a, text=t) for t in UNICODE_SAMPLES]
            p = await s.open()
            await s.deliver(p, batch)
            alone = [s.kit.message(a, text="".join(UNICODE_SAMPLES))]
            await s.deliver(p, alone)
            await s.settle(_by_channel(batch, alone))

