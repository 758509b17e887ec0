"""Ably: the official SDK's REST client, many channels per HTTP request, within Ably's limits.

Each batch goes out through Ably's batch-publish endpoint (``POST /messages``): one spec per
channel per request, up to ``max_channels_per_request`` channels and ``max_request_bytes``.
Ably publishes the specs of one request in parallel, so a channel never has two specs in one
request: a channel's second group of messages goes in the next round, after the first one
succeeded - that keeps per-channel (and so per-row) order.

Idempotency: a message published alone carries its event's ``id``. Ably requires the messages
of one multi-message publish to carry ``<base>:0``, ``<base>:1``, ... and de-duplicates the
publish as a whole by ``<base>``; the base here is the first message's id plus a digest of all
of them, so a re-delivered batch that groups the same changes gets the same ids (Ably drops
it), and one that groups them differently can never be mistaken for an earlier publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from connector.publishers.base import (
    PartialFailure,
    PermanentError,
    Publisher,
    PublishError,
    RetryableError,
)
from connector.vocabulary import Message, parse_template
from connector.vocabulary.channels import render_channel

# Ably's batch-publish error when some specs of a request failed (the others were published).
BATCH_PARTIAL = 40020
# Per-message JSON overhead beyond name, id and data (keys, quotes, encoding), for sizing.
_MESSAGE_OVERHEAD = 48
# A 429 means "slower": wait at least this long before the next try.
_RATE_LIMIT_WAIT = 1.0


@dataclass(slots=True)
class _Unit:
    """One Ably message: one event, or several packed into an array."""

    indices: list[int]  # positions in the batch of the events it carries
    id: str
    name: str
    data: str  # JSON text, sent with encoding "json" so subscribers get an object
    size: int


@dataclass(slots=True)
class _Group:
    """The units published on one channel in one spec (atomically, in order)."""

    channel: str
    units: list[_Unit]
    size: int = 0

    @property
    def indices(self) -> list[int]:
        return [i for u in self.units for i in u.indices]

    def wire(self) -> list[dict[str, str]]:
        if len(self.units) == 1:
            ids = [self.units[0].id]
        else:
            base = f"{self.units[0].id}~{_digest(u.id for u in self.units)}"
            ids = [f"{base}:{n}" for n in range(len(self.units))]
        return [{"id": i, "name": u.name, "data": u.data, "encoding": "json"}
                for i, u in zip(ids, self.units, strict=True)]


@dataclass(slots=True)
class _Bucket:
    """Token bucket for one channel's message rate; ``reserve`` says how long to wait."""

    rate: float
    capacity: float
    tokens: float = field(default=0.0)
    stamp: float = field(default_factory=time.monotonic)

    def reserve(self, count: int) -> float:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= count
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class AblyPublisher(Publisher):
    type_name = "ably"

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        o = self.options  # defaults filled in from config/schema.json
        self._secret: str = o.get("api_key") or o.get("token") or ""
        self.max_message_size = int(o["max_message_size"])
        self.max_request_bytes = int(o["max_request_bytes"])
        self.max_channels = int(o["max_channels_per_request"])
        self.channel_rate = float(o["channel_rate"])
        # Burst of a fifth of a second: no one-second window sees much more than the rate.
        self.burst = max(1, math.floor(self.channel_rate * 0.2)) if self.channel_rate else 0
        self.concurrency = int(o["concurrency"])
        self.timeout = float(o["timeout"])
        self.oversize: str = o["oversize"]
        self.name_template = parse_template(o["message_name"])
        packing: Mapping[str, Any] = o["packing"]
        self.packing = bool(packing["enabled"])
        self.pack_events = int(packing["max_events"])
        # max_bytes defaults to max_message_size (no fixed default in the schema)
        self.pack_bytes = min(int(packing.get("max_bytes", self.max_message_size)),
                              self.max_message_size)
        self.pack_name: str = packing["name"]
        self.linger = float(packing["linger"]) if self.packing else 0.0
        self._buckets: dict[str, _Bucket] = {}
        self._client: Any = None
        self.requests = 0  # HTTP requests sent, for stats and tests

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """What the schema cannot say simply (and without echoing a key)."""
        problems = super().check_options(options)
        if ("api_key" in options) == ("token" in options):
            problems.append(": give exactly one of api_key or token")
        if "api_key" in options and options.get("tls") is False:
            problems.append(".tls: Ably accepts an API key only over TLS "
                            "(use a token for tls: false)")
        return problems

    # ------------------------------------------------------------------ lifecycle

    def _make_client(self) -> Any:
        from ably import AblyRest  # the SDK imports httpx/h2: only when configured

        o = self.options
        tls = bool(o["tls"])
        client: dict[str, Any] = {
            "tls": tls,
            "use_binary_protocol": False,  # the event is JSON text already: no re-encoding
            "idempotent_rest_publishing": False,  # ids come from the events, not random
            "http_request_timeout": self.timeout,
            "http_open_timeout": min(self.timeout, 4.0),
            "http_max_retry_duration": self.timeout,
        }
        if o.get("endpoint"):
            client["endpoint"] = o["endpoint"]
        if o.get("port"):
            client["tls_port" if tls else "port"] = int(o["port"])
        if o.get("api_key"):
            return AblyRest(key=o["api_key"], **client)
        return AblyRest(token=o["token"], **client)

    async def open(self) -> None:
        if self._client is None:
            self._client = self._make_client()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    # ------------------------------------------------------------------ publish

    async def publish(self, messages: Sequence[Message]) -> None:
        await self.open()
        failures: dict[int, PublishError] = {}
        queues = self._plan(messages, failures)
        sem = asyncio.Semaphore(self.concurrency)
        while queues:
            round_groups = [q.pop(0) for q in queues.values()]
            queues = {ch: q for ch, q in queues.items() if q}
            requests = self._requests(round_groups)
            results = await asyncio.gather(*(self._send(r, sem) for r in requests))
            for request, errors in zip(requests, results, strict=True):
                for group, error in zip(request, errors, strict=True):
                    if error is None:
                        continue
                    for i in group.indices:
                        failures[i] = error
                    if isinstance(error, RetryableError) and group.channel in queues:
                        # Later groups of this channel must not overtake the failed one.
                        for later in queues.pop(group.channel):
                            for i in later.indices:
                                failures[i] = error
        if failures:
            # One error for the whole batch reads better than a partial failure of all of it.
            every = list(failures.values())
            if len(failures) == len(messages) and len({(type(e), str(e)) for e in every}) == 1:
                raise every[0]
            raise PartialFailure(failures)

    def _plan(self, messages: Sequence[Message],
              failures: dict[int, PublishError]) -> dict[str, list[_Group]]:
        """Units per channel (packed if asked), then groups that fit one publish."""
        units: dict[str, list[_Unit]] = {}
        for i, m in enumerate(messages):
            unit = self._unit(i, m, failures)
            if unit is not None:
                units.setdefault(m.channel, []).append(unit)
        queues: dict[str, list[_Group]] = {}
        for channel, channel_units in units.items():
            if self.packing:
                channel_units = self._pack(channel_units)
            groups: list[_Group] = []
            for u in channel_units:
                g = groups[-1] if groups else None
                if (g is None or g.size + u.size > self.max_message_size
                        or (self.burst and len(g.units) >= self.burst)):
                    g = _Group(channel, [])
                    groups.append(g)
                g.units.append(u)
                g.size += u.size
            queues[channel] = groups
        return queues

    def _unit(self, index: int, m: Message, failures: dict[int, PublishError]) -> _Unit | None:
        event = m.event
        name = m.name if self.name_template.source == "{op}" else render_channel(
            self.name_template, event)
        data = m.payload.decode()
        size = len(m.payload) + len(name) + 40 + _MESSAGE_OVERHEAD
        if size > self.max_message_size:
            if self.oversize == "reference":
                data = orjson.dumps(_reference(m)).decode()
                size = len(data) + len(name) + 40 + _MESSAGE_OVERHEAD
            if size > self.max_message_size:
                failures[index] = PermanentError(
                    f"ably: event of {len(m.payload)} bytes is over max_message_size "
                    f"({self.max_message_size}); oversize policy {self.oversize}")
                return None
        return _Unit([index], m.message_id, name, data, size)

    def _pack(self, units: list[_Unit]) -> list[_Unit]:
        """Consecutive events of one channel as JSON arrays, bounded by count and bytes."""
        packs: list[list[_Unit]] = []
        size = 0
        for u in units:
            if (not packs or len(packs[-1]) >= self.pack_events
                    or size + u.size > self.pack_bytes):
                packs.append([])
                size = len(self.pack_name) + 40 + _MESSAGE_OVERHEAD
            packs[-1].append(u)
            size += len(u.data) + 1
        out = []
        for pack in packs:
            data = "[" + ",".join(u.data for u in pack) + "]"
            pack_id = (pack[0].id if len(pack) == 1
                       else f"{pack[0].id}~{_digest(u.id for u in pack)}")
            out.append(_Unit([i for u in pack for i in u.indices], pack_id, self.pack_name, data,
                             len(data) + len(self.pack_name) + 40 + _MESSAGE_OVERHEAD))
        return out

    def _requests(self, groups: list[_Group]) -> list[list[_Group]]:
        """Split one round (at most one group per channel) into HTTP requests."""
        requests: list[list[_Group]] = [[]]
        size = 0
        for g in groups:
            if requests[-1] and (len(requests[-1]) >= self.max_channels
                                 or size + g.size > self.max_request_bytes):
                requests.append([])
                size = 0
            requests[-1].append(g)
            size += g.size
        return [r for r in requests if r]

    async def _send(self, request: list[_Group],
                    sem: asyncio.Semaphore) -> list[PublishError | None]:
        """Publish one request; the error of each group, or None where it was published."""
        if self.channel_rate:
            wait = max(self._bucket(g.channel).reserve(len(g.units)) for g in request)
            if wait > 0:
                await asyncio.sleep(wait)
        body = orjson.dumps([{"channels": g.channel, "messages": g.wire()} for g in request])
        async with sem:
            self.requests += 1
            try:
                response = await self._post(body)
            except PublishError as exc:
                return [exc] * len(request)
        status = int(response.status_code)
        items = response.items
        body_obj = _first(items)
        error = body_obj.get("error") if isinstance(body_obj, dict) else None
        code = _code(error, response)
        partial = status == 400 and code == BATCH_PARTIAL and isinstance(body_obj, dict)
        if not (200 <= status < 300 or partial):
            message = str(error.get("message", "")) if isinstance(error, dict) else (
                response.error_message or "")
            return [self._classify(status, code, message)] * len(request)
        # Per-channel outcomes come in two shapes, by protocol version: a 400/40020 whose
        # batchResponse lists {channel, messageId | error} (versions < 2), or a 201 with one
        # {successCount, failureCount, results: [...]} per spec (2 and later), where a failed
        # channel hides inside the success status. Match outcomes to specs by channel name.
        outcomes: list[Any] = []
        if partial:
            outcomes = list(body_obj.get("batchResponse") or [])
        else:
            for item in items if isinstance(items, list) else [items]:
                results = item.get("results") if isinstance(item, dict) else None
                outcomes += results if isinstance(results, list) else [item]
        failed: dict[str, Any] = {}
        seen: set[str] = set()
        for r in outcomes:
            if isinstance(r, dict) and isinstance(r.get("channel"), str):
                seen.add(r["channel"])
                if r.get("error"):
                    failed[r["channel"]] = r["error"]
        out: list[PublishError | None] = []
        for g in request:
            err = failed.get(g.channel)
            if err is None and (g.channel in seen or not partial):
                out.append(None)
            elif isinstance(err, dict):
                out.append(self._classify(int(err.get("statusCode") or 500), _code(err, None),
                                          str(err.get("message", ""))))
            else:
                out.append(RetryableError("ably: no result for this channel in the response"))
        return out

    async def _post(self, body: bytes) -> Any:
        import ably
        import httpx
        from ably.util.exceptions import AblyException

        try:
            return await self._client.request("POST", "/messages", ably.api_version, body=body)
        except httpx.TimeoutException:
            raise RetryableError(f"ably: no response within {self.timeout:g} s") from None
        except (httpx.HTTPError, OSError) as exc:
            raise RetryableError(f"ably: {self._scrub(type(exc).__name__ + ': ' + str(exc))}"
                                 ) from None
        except AblyException as exc:
            raise self._classify(int(exc.status_code or 500), int(exc.code or 0),
                                 str(exc.message)) from None

    def _classify(self, status: int, code: int, message: str) -> PublishError:
        text = f"ably {code or status} (HTTP {status}): {self._scrub(message)}".rstrip(": ")
        if status == 429 or 42910 <= code <= 42999:
            return RetryableError(text, retry_after=_RATE_LIMIT_WAIT)
        if status >= 500 or code >= 50000 or status in (408, 0):
            return RetryableError(text)
        return PermanentError(text)

    def _scrub(self, text: str) -> str:
        secret = self._secret.partition(":")[2] or self._secret
        return text.replace(secret, "***") if secret else text

    def _bucket(self, channel: str) -> _Bucket:
        bucket = self._buckets.get(channel)
        if bucket is None:
            bucket = self._buckets[channel] = _Bucket(self.channel_rate, float(self.burst),
                                                      float(self.burst))
        return bucket


def _digest(ids: Any) -> str:
    return hashlib.blake2b("\n".join(ids).encode(), digest_size=8).hexdigest()


def _first(items: Any) -> Any:
    if isinstance(items, list) and items:
        return items[0]
    return items


def _code(error: Any, response: Any) -> int:
    if isinstance(error, dict) and str(error.get("code", "")).isdigit():
        return int(error["code"])
    header = response.error_code if response is not None else None
    return int(header) if header and str(header).isdigit() else 0


def _reference(m: Message) -> dict[str, Any]:
    """The event without its rows, with the primary key so a subscriber can fetch the row."""
    data = m.event.data
    row = data.get("old") if m.event.op == "delete" else data.get("new")
    key = ({c: row.get(c) for c in m.event.key}
           if m.event.key and isinstance(row, dict) else None)
    out = {k: v for k, v in data.items() if k not in ("new", "old", "changes")}
    out["key"] = key
    out["oversize"] = True
    return out
