"""A local HTTPS endpoint that speaks Ably's REST publish protocol, for tests.

Ably's service cannot be reached from the test machines, so this stands in for it: the official
``ably`` SDK (and the daemon, in a subprocess) talks to it over real TLS, and tests look at what
arrived, inject failures and delays, and check Ably's rules were kept.

What it serves (paths as the SDK sends them):

* ``POST /channels/{channel}/messages`` -- one message object or a list of them (JSON,
  msgpack or form-encoded, per Content-Type). The channel name is percent-decoded with
  ``unquote_plus``, as the Python SDK encodes it with ``quote_plus(name, safe=':')``.
  Success: 201 ``{channel, messageId, serials}``.
* ``POST /messages`` -- batch publish: one BatchSpec ``{channels: str | [str], messages: obj |
  [obj]}`` or a list of them. The answer depends on the ``X-Ably-Version`` request header, as
  Ably's does: below ``batch_results_from_version`` (default 2; also when the header is absent)
  the documented "legacy" form -- 201 and a flat list of ``{channel, messageId}`` in request order
  (spec by spec, channel by channel), or, if any channel failed, 400 ``{error: {code: 40020,
  statusCode: 400, message}, batchResponse: [...]}`` where failed entries are ``{channel,
  error}``. From that version on (ably-js sends 3 and reads this form; the Python SDK sends
  whatever ``request()`` is given), 201 and one ``{successCount, failureCount, results: [...]}``
  per spec, partial failures included (there is no 40020 in this form).
* ``GET /channels/{channel}/messages`` -- the delivered messages, newest first (no paging).
* ``POST /keys/{keyName}/requestToken`` -- a signed TokenRequest (mac checked) gives a token
  that the endpoint then accepts; the SDK asks for one when a key-authenticated client gets a
  token error (40140-40149).
* ``GET /time`` -- ``[ms since the epoch]``, no auth.

Responses are JSON, or msgpack when the Accept header asks for ``application/x-msgpack``.
Errors are ``{"error": {"message", "code", "statusCode", "href"}}`` plus Ably's
``X-Ably-Errorcode`` / ``X-Ably-Errormessage`` headers (``HttpPaginatedResponse.error_code``
reads them).

Ably's rules, enforced as the service does (codes from ably-common's errors.json):

* Auth: ``Authorization: Basic base64(key)`` must carry the configured key, ``Bearer
  base64(token)`` (as the SDK sends it; a raw token is accepted too) a known token; otherwise
  401/40101. An issued token past its expiry gives 401/40142.
* Ids: a single message may carry any non-empty id. In a multi-message publish (a list on the
  channel route, or one spec's message list, per channel), if any message has an id then every
  one must be ``<base>:<n>`` with one base and n = 0, 1, 2 ... in order; else 400/40031.
* Idempotency, per channel: a single message's id, or a multi-message publish's base, is
  remembered once delivered; a publish repeating it is acknowledged as before (same messageId
  and serials) but its messages go to ``duplicates``, not ``messages``. No expiry window.
* Size: the messages of one publish (per channel route request, or per spec) may total at most
  ``max_message_size`` bytes, else 400/40009. A message's size is an approximation of Ably's:
  the UTF-8 bytes of ``name``, ``clientId`` and ``id``, plus the compact JSON of ``extras``,
  plus the data -- a string's UTF-8 bytes (for base64-encoded data: the decoded bytes), binary's
  length, or the compact JSON of an object/array. Counting the id makes this a little stricter
  than Ably, never looser. A ``/messages`` body above ``max_request_bytes`` (2 MiB) is 400/40009.
* At most ``max_channels`` (100) distinct channels per batch request, else 400/90010 ("maximum
  number of channels per connection/request exceeded").
* Data must be a string, binary, object/array or absent, and its ``encoding`` (json, base64,
  utf-8, applied right to left) must decode, else 400/40013 -- stricter than Ably, which stores
  undecodable data as it came; encodings it does not know (cipher+...) are left undecoded.

In a batch, structural problems (not a spec, no channels, too many channels, body too big) fail
the whole request; a spec's id or size problem fails that spec's channels, as a per-channel
error, like Ably's per-channel publishes.

Fault injection (thread-safe; applies to the publish routes only, in the order queued; a fault
counts the requests it was applied to in ``served``):

* ``fail_next(status, code, count=1, channel=None)`` -- answer with that error. A channel-specific
  failure fails a channel-route request for that channel whole, and in a batch only that
  channel's entries (a 40020 partial failure, or failure results in the newer form).
* ``delay_next(seconds, count=1, channel=None, deliver=True)`` -- hold the response; with
  ``deliver`` the messages are recorded on arrival (the "published but the answer came too late"
  case a retry must not duplicate), without it nothing is recorded and the held request is
  finally answered 500/50003.
* ``disconnect_next(count=1, channel=None, deliver=False)`` -- drop the connection without an
  answer (after recording the messages if ``deliver``).

Records: ``requests`` (every request: when, method, path, channels, message count, status, code,
auth kind, version, injected faults), ``messages(channel)`` delivered in order, ``duplicates``,
``publish_times(channel)`` / ``max_rate(channel, window)`` for per-channel rates. Times are
``time.monotonic()`` values (CLOCK_MONOTONIC, comparable across processes on one machine).

The server runs in its own thread with its own event loop, so it serves sync tests, async tests
and a daemon subprocess alike. The SDK builds its httpx client with default verification, which
honours ``SSL_CERT_FILE`` (httpx 0.28 reads it when the client is made, i.e. when ``AblyRest`` is
constructed): the ``ably_endpoint`` fixture sets it to ``ca_file``; give a subprocess
``endpoint.env()``. The SDK is pointed here with ``endpoint.client_options()``, i.e.
``AblyRest(key=endpoint.key, endpoint="127.0.0.1", tls_port=endpoint.port)`` (an endpoint with a
dot or "localhost" is taken as a hostname, with no fallback hosts).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import msgpack
import pytest
import trustme
from aiohttp import web

DEFAULT_KEY = "testapp.testkey:s3cret-0123456789abcdef"
DEFAULT_TOKEN = "testapp.StaticTestToken-0123456789abcdef"
MAX_MESSAGE_SIZE = 65536
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_CHANNELS = 100

_CHANNEL_MESSAGES = re.compile(r"/channels/([^/]+)/messages")
_REQUEST_TOKEN = re.compile(r"/keys/([^/]+)/requestToken")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_LOOPBACK = "127.0.0.1,localhost,::1"

_DEFAULT_MESSAGES = {
    40009: "Maximum message length exceeded",
    40101: "Invalid credentials",
    40140: "Token error",
    40142: "Key/token status changed (expire)",
    40160: "Action not permitted",
    42910: "Rate limit exceeded; request rejected",
    50000: "Internal error",
    50003: "Timeout",
}


class AblyError(Exception):
    """An error answered the way Ably answers it."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def info(self) -> dict[str, Any]:
        return {"message": self.message, "code": self.code, "statusCode": self.status,
                "href": f"https://help.ably.io/error/{self.code}"}


@dataclass
class RecordedRequest:
    index: int
    at: float  # time.monotonic() when received
    method: str
    path: str  # raw (still percent-encoded) path, no query
    query: str
    auth: str  # "basic", "bearer", "none" or "other"
    version: str | None  # X-Ably-Version
    content_type: str
    accept: str
    channels: list[str] = field(default_factory=list)
    message_count: int = 0  # messages in the publish (a batch: per spec, times its channels)
    status: int = 0  # 0 while in flight, or when the connection was dropped
    code: int | None = None  # Ably error code of an error answer
    injected: list[str] = field(default_factory=list)  # "fail", "delay", "disconnect"
    failed_channels: list[str] = field(default_factory=list)  # batch entries that failed
    duplicate_channels: list[str] = field(default_factory=list)  # acknowledged, not delivered


@dataclass
class RecordedMessage:
    channel: str
    name: str | None
    id: str  # the client's id, or the one the endpoint assigned
    data: Any  # decoded per ``encoding``: json -> object, base64 -> bytes, utf-8 -> str
    encoding: str | None  # as sent
    raw: dict[str, Any]  # the message object as received
    client_id: str | None
    extras: Any
    at: float  # time.monotonic()
    request: int  # index into ``requests``
    timestamp: int = 0  # ms since the epoch


@dataclass
class Fault:
    """A queued fault; ``served`` counts the requests it was applied to."""

    kind: str  # "fail", "delay" or "disconnect"
    count: int
    channel: str | None = None
    status: int = 0
    code: int = 0
    message: str = ""
    seconds: float = 0.0
    deliver: bool = False
    served: int = 0

    @property
    def remaining(self) -> int:
        return self.count - self.served


@dataclass
class _Unit:
    """One channel's share of a publish: what gets delivered (or refused) atomically."""

    channel: str
    messages: list[dict[str, Any]]
    spec: int = 0


class AblyEndpoint:
    """An HTTPS server speaking Ably's REST publish protocol; see the module docstring."""

    def __init__(self, key: str = DEFAULT_KEY, token: str | None = DEFAULT_TOKEN, *,
                 max_message_size: int = MAX_MESSAGE_SIZE,
                 max_request_bytes: int = MAX_REQUEST_BYTES, max_channels: int = MAX_CHANNELS,
                 batch_results_from_version: int = 2, token_ttl_ms: int = 3_600_000,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        key_name, sep, secret = key.partition(":")
        if not sep or "." not in key_name or not secret:
            raise ValueError("an Ably key looks like 'appId.keyId:secret'")
        self.key = key
        self.key_name = key_name
        self.token = token
        self.max_message_size = max_message_size
        self.max_request_bytes = max_request_bytes
        self.max_channels = max_channels
        self.batch_results_from_version = batch_results_from_version
        self.token_ttl_ms = token_ttl_ms
        self.host = host
        self.port = port

        self._dir = tempfile.mkdtemp(prefix="ably-endpoint-")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        self.ca_file = os.path.join(self._dir, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._ssl)
        self._ssl.set_alpn_protocols(["http/1.1"])  # the SDK offers h2; this server speaks 1.1

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._messages: list[RecordedMessage] = []
        self._duplicates: list[RecordedMessage] = []
        self._publish_times: dict[str, list[tuple[float, int]]] = {}
        self._seen: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, id/base) -> result
        self._faults: list[Fault] = []
        self._tokens: dict[str, int | None] = {}  # token -> expiry (ms) or None
        if token is not None:
            self._tokens[token] = None
        self._serial = 0
        self.errors: list[str] = []  # unexpected exceptions in handlers (tests may assert none)

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._protocols: list[Any] = []  # each connection's since start() (aiohttp's
        # handlers take no weak references)
        self._stopping: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> AblyEndpoint:
        """Listen (on the same port again after a ``stop()``) and serve in a background thread."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                             socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._astart(sock))
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                # What stopping the server leaves running: asyncio's accept task of each
                # connection still in its TLS handshake (aiohttp knows a connection only once
                # the handshake is done, so its shutdown does not close these). Cancelled,
                # each closes its transport; closed with the loop, they would leak the socket.
                left = asyncio.all_tasks(loop)
                for task in left:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"ably-endpoint:{self.port}",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            self._thread = None
            self._loop = None
            sock.close()
            raise RuntimeError("the Ably test endpoint did not start") from (
                failure[0] if failure else None)
        return self

    def stop(self) -> None:
        """Stop serving (connections are refused until ``start()`` again); records are kept."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None

    def close(self) -> None:
        """Stop and remove the certificate files."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> AblyEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def _astart(self, sock: socket.socket) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024 * 1024)  # limits are ours to answer
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        handler = self._runner.server
        assert handler is not None
        self._protocols = []

        def protocol() -> Any:  # aiohttp's, remembered so _astop can end its connection
            made = handler()
            self._protocols.append(made)
            return made

        self._server = await asyncio.get_running_loop().create_server(
            protocol, sock=sock, ssl=self._ssl)

    async def _astop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # wakes held (delayed) requests
        if self._server is not None:
            self._server.close()  # no new connections
            self._server = None
        connected = self._transports()  # aiohttp forgets each transport once it closes it
        if self._runner is not None:
            await self._runner.cleanup()  # idle connections closed, requests given 1 s
            self._runner = None
        # A TLS close waits for the peer's answer; a peer that never answers (behind a
        # blackholed proxy) would keep it waiting past the loop's end, and the socket leaks.
        # Given a moment, what is still open is aborted.
        connected += self._transports()
        deadline = time.monotonic() + 1.0
        while any(map(_still_open, connected)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for transport in filter(_still_open, connected):
            transport.abort()
        self._protocols = []
        await asyncio.sleep(0)  # the aborts close their sockets

    def _transports(self) -> list[asyncio.BaseTransport]:
        return [made.transport for made in self._protocols if made.transport is not None]

    # ------------------------------------------------------------------ client configuration

    def client_options(self, **extra: Any) -> dict[str, Any]:
        """Keyword arguments that point ``ably.AblyRest`` here (add ``key=`` or ``token=``)."""
        return {"endpoint": self.host, "tls_port": self.port, **extra}

    def client(self, *, token: bool = False, **extra: Any) -> Any:
        """An ``ably.AblyRest`` for this endpoint, by key (or by the static token).

        ``SSL_CERT_FILE`` must name ``ca_file`` already (the fixture sets it)."""
        from ably import AblyRest

        if token:
            return AblyRest(token=self.token, **self.client_options(**extra))
        return AblyRest(key=self.key, **self.client_options(**extra))

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should trust this endpoint and reach it directly."""
        out = {"SSL_CERT_FILE": self.ca_file}
        if any(os.environ.get(v) for v in _PROXY_VARS):
            current = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
            out["NO_PROXY"] = out["no_proxy"] = ",".join(p for p in (current, _LOOPBACK) if p)
        return out

    # ------------------------------------------------------------------ fault injection

    def fail_next(self, status: int, code: int, count: int = 1, *, channel: str | None = None,
                  message: str | None = None) -> Fault:
        """Answer the next ``count`` publish requests (touching ``channel``) with this error."""
        text = message or _DEFAULT_MESSAGES.get(code, f"Injected failure {code}")
        return self._queue(Fault("fail", count, channel, status=status, code=code, message=text))

    def delay_next(self, seconds: float, count: int = 1, *, channel: str | None = None,
                   deliver: bool = True) -> Fault:
        """Hold the response to the next ``count`` publish requests for ``seconds``."""
        return self._queue(Fault("delay", count, channel, seconds=seconds, deliver=deliver))

    def disconnect_next(self, count: int = 1, *, channel: str | None = None,
                        deliver: bool = False) -> Fault:
        """Drop the connection of the next ``count`` publish requests without an answer."""
        return self._queue(Fault("disconnect", count, channel, deliver=deliver))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if f.remaining > 0]

    def _queue(self, fault: Fault) -> Fault:
        if fault.count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.append(fault)
        return fault

    def _take_faults(self, channels: list[str], batch: bool
                     ) -> tuple[Fault | None, Fault | None, dict[str, Fault]]:
        """The faults this request gets: (fail or disconnect, delay, per-channel failures)."""
        fault: Fault | None = None
        delay: Fault | None = None
        per_channel: dict[str, Fault] = {}
        with self._lock:
            for f in self._faults:
                if f.remaining <= 0 or (f.channel is not None and f.channel not in channels):
                    continue
                if f.kind == "delay":
                    if delay is None:
                        delay = f
                        f.served += 1
                elif f.kind == "fail" and batch and f.channel is not None:
                    if f.channel not in per_channel:
                        per_channel[f.channel] = f
                        f.served += 1
                elif fault is None:
                    fault = f
                    f.served += 1
            self._faults = [f for f in self._faults if f.remaining > 0]
        return fault, delay, per_channel

    # ------------------------------------------------------------------ tokens

    def issue_token(self, ttl_ms: int | None = None) -> str:
        """A new token the endpoint accepts until it expires."""
        token = f"{self.key_name.split('.')[0]}.{secrets.token_urlsafe(24)}"
        with self._lock:
            self._tokens[token] = _now_ms() + (ttl_ms or self.token_ttl_ms)
        return token

    def expire_tokens(self, include_static: bool = False) -> None:
        """Make issued tokens (and the static one too, if asked) expired: 401/40142 from now."""
        with self._lock:
            for token in self._tokens:
                if token != self.token or include_static:
                    self._tokens[token] = 0

    # ------------------------------------------------------------------ records

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def publish_requests(self) -> list[RecordedRequest]:
        """The requests to the publish routes (channel messages and batch)."""
        return [r for r in self.requests if r.method == "POST" and (
            r.path == "/messages" or _CHANNEL_MESSAGES.fullmatch(r.path))]

    def messages(self, channel: str | None = None) -> list[RecordedMessage]:
        """Delivered messages, in the order they were accepted."""
        with self._lock:
            return [m for m in self._messages if channel is None or m.channel == channel]

    def data(self, channel: str | None = None) -> list[Any]:
        return [m.data for m in self.messages(channel)]

    @property
    def duplicates(self) -> list[RecordedMessage]:
        """Messages of publishes acknowledged as repeats of an id (or base) already delivered."""
        with self._lock:
            return list(self._duplicates)

    def channels(self) -> list[str]:
        """Channels with delivered messages, in order of first delivery."""
        return list(dict.fromkeys(m.channel for m in self.messages()))

    def publish_times(self, channel: str) -> list[float]:
        """``time.monotonic()`` of each publish delivered to ``channel``."""
        with self._lock:
            return [t for t, _ in self._publish_times.get(channel, [])]

    def max_rate(self, channel: str, window: float = 1.0, *, messages: bool = False) -> float:
        """The most publishes (or messages) to ``channel`` in any ``window`` seconds, per second.

        Ably's per-channel limit counts a publish of several messages (one spec, or one list
        on the channel route) once; ``messages=True`` counts the messages instead."""
        with self._lock:
            events = list(self._publish_times.get(channel, []))
        best, start, total = 0, 0, 0
        for t, n in events:
            total += n if messages else 1
            while events[start][0] <= t - window:
                total -= events[start][1] if messages else 1
                start += 1
            best = max(best, total)
        return best / window

    def wait_for_messages(self, count: int, channel: str | None = None,
                          timeout: float = 10.0) -> list[RecordedMessage]:
        """Block until ``count`` messages were delivered (to ``channel``); whatever came, at most
        ``timeout`` seconds later. Not for an async test whose own loop does the publishing:
        use ``await_messages`` there."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self._messages if channel is None or m.channel == channel]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    return found
                self._cond.wait(remaining)

    async def await_messages(self, count: int, channel: str | None = None,
                             timeout: float = 10.0) -> list[RecordedMessage]:
        """``wait_for_messages`` for async tests (polls, so the test's loop keeps running)."""
        deadline = time.monotonic() + timeout
        while len(found := self.messages(channel)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return found

    def reset(self, *, forget_ids: bool = True) -> None:
        """Forget requests, messages, duplicates, faults (and remembered ids, unless told not)."""
        with self._lock:
            self._requests.clear()
            self._messages.clear()
            self._duplicates.clear()
            self._publish_times.clear()
            self._faults.clear()
            self.errors.clear()
            if forget_ids:
                self._seen.clear()

    # ------------------------------------------------------------------ HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        rec = RecordedRequest(
            index=0, at=time.monotonic(), method=request.method, path=path, query=query,
            auth=_auth_kind(request.headers.get("Authorization")),
            version=request.headers.get("X-Ably-Version"),
            content_type=request.headers.get("Content-Type", ""),
            accept=request.headers.get("Accept", ""))
        with self._lock:
            rec.index = len(self._requests)
            self._requests.append(rec)
        try:
            channel_route = _CHANNEL_MESSAGES.fullmatch(path)
            token_route = _REQUEST_TOKEN.fullmatch(path)
            if path == "/time" and request.method == "GET":
                return self._respond(request, rec, 200, [_now_ms()])
            if channel_route and request.method == "POST":
                return await self._publish_channel(request, rec, unquote_plus(channel_route[1]))
            if channel_route and request.method == "GET":
                self._authenticate(request)
                return self._history(request, rec, unquote_plus(channel_route[1]))
            if path == "/messages" and request.method == "POST":
                return await self._publish_batch(request, rec)
            if token_route and request.method == "POST":
                return await self._request_token(request, rec, unquote_plus(token_route[1]))
            if path in ("/time", "/messages") or channel_route or token_route:
                raise AblyError(405, 40500, f"Method {request.method} not allowed on {path}")
            raise AblyError(404, 40400, f"No resource at {path}")
        except AblyError as exc:
            return self._error(request, rec, exc)
        except Exception as exc:  # a bug here: answered like Ably's internal error, and kept
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            return self._error(request, rec, AblyError(500, 50000, f"Internal error: {exc}"))

    def _respond(self, request: web.Request, rec: RecordedRequest, status: int, body: Any,
                 code: int | None = None, headers: dict[str, str] | None = None
                 ) -> web.Response:
        rec.status = status
        rec.code = code
        if "application/x-msgpack" in request.headers.get("Accept", ""):
            payload: bytes = msgpack.packb(body, use_bin_type=True)
            content_type = "application/x-msgpack"
        else:
            payload = json.dumps(body, separators=(",", ":")).encode()
            content_type = "application/json"
        with self._cond:
            self._cond.notify_all()
        return web.Response(status=status, body=payload, content_type=content_type,
                            headers=headers)

    def _error(self, request: web.Request, rec: RecordedRequest, exc: AblyError,
               extra: dict[str, Any] | None = None) -> web.Response:
        headers = {"X-Ably-Errorcode": str(exc.code),
                   "X-Ably-Errormessage": _header_safe(exc.message)}
        body: dict[str, Any] = {"error": exc.info(), **(extra or {})}
        return self._respond(request, rec, exc.status, body, exc.code, headers)

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if not header:
            raise AblyError(401, 40101, "No authentication information was provided")
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise AblyError(401, 40101, "Invalid credentials: malformed Basic auth") from None
            name = given.partition(":")[0]
            if name != self.key_name:
                raise AblyError(401, 40101, f"Invalid credentials: no key named {name!r}")
            if not hmac.compare_digest(given.encode(), self.key.encode()):
                raise AblyError(401, 40101, "Invalid credentials: key secret mismatch")
            return
        if scheme.lower() == "bearer":
            candidates = [value]
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                candidates.insert(0, base64.b64decode(value, validate=True).decode())
            with self._lock:
                for token in candidates:
                    if token in self._tokens:
                        expiry = self._tokens[token]
                        if expiry is not None and expiry <= _now_ms():
                            raise AblyError(401, 40142, "Key/token status changed (expire)")
                        return
            raise AblyError(401, 40101, "Invalid credentials: token not recognised")
        raise AblyError(401, 40101, f"Invalid credentials: unsupported scheme {scheme!r}")

    async def _body(self, request: web.Request, limit: int | None = None) -> Any:
        raw = await request.read()
        if limit is not None and len(raw) > limit:
            raise AblyError(400, 40009, f"Request body too large ({len(raw)} bytes; the "
                                        f"maximum is {limit} bytes)")
        if not raw:
            raise AblyError(400, 40001, "Request body is empty")
        content_type = request.content_type
        try:
            if content_type == "application/json" or content_type.endswith("+json"):
                return json.loads(raw)
            if content_type == "application/x-msgpack":
                try:
                    return msgpack.unpackb(raw, raw=False, strict_map_key=False)
                except UnicodeDecodeError:  # str packed as raw bytes (use_bin_type=False)
                    return _texts(msgpack.unpackb(raw, raw=True, strict_map_key=False))
            if content_type == "application/x-www-form-urlencoded":
                return dict(parse_qsl(raw.decode(), keep_blank_values=True))
        except (ValueError, msgpack.UnpackException) as exc:
            raise AblyError(400, 40001, f"Unable to decode the request body as "
                                        f"{content_type}: {exc}") from None
        raise AblyError(400, 40001, f"Unsupported Content-Type {content_type!r}")

    # ------------------------------------------------------------------ routes

    async def _publish_channel(self, request: web.Request, rec: RecordedRequest,
                               channel: str) -> web.StreamResponse:
        self._authenticate(request)
        rec.channels = [channel]
        if not channel:
            raise AblyError(400, 40010, "Invalid channel name: empty")
        messages = _message_list(await self._body(request))
        rec.message_count = len(messages)
        fault, delay, _ = self._take_faults([channel], batch=False)
        unit = _Unit(channel, messages)

        def process() -> web.Response:
            result, duplicate = self._publish_unit(unit, rec)
            if duplicate:
                rec.duplicate_channels.append(channel)
            return self._respond(request, rec, 201, result)

        return await self._serve(request, rec, fault, delay, process)

    async def _publish_batch(self, request: web.Request, rec: RecordedRequest
                             ) -> web.StreamResponse:
        self._authenticate(request)
        body = await self._body(request, self.max_request_bytes)
        specs = [body] if isinstance(body, dict) else body
        if not isinstance(specs, list) or not specs:
            raise AblyError(400, 40001, "The body must be a BatchSpec or a non-empty list of them")
        units: list[_Unit] = []
        for n, spec in enumerate(specs):
            if not isinstance(spec, dict):
                raise AblyError(400, 40001, f"BatchSpec {n} is not an object")
            channels = spec.get("channels")
            if isinstance(channels, str):
                channels = [channels]
            if (not isinstance(channels, list) or not channels
                    or not all(isinstance(c, str) for c in channels)):
                raise AblyError(400, 40001, f"BatchSpec {n}: channels must be a channel name "
                                            "or a non-empty list of them")
            if "" in channels:
                raise AblyError(400, 40010, f"BatchSpec {n}: invalid channel name: empty")
            messages = _message_list(spec.get("messages"), f"BatchSpec {n}: ")
            units.extend(_Unit(c, messages, n) for c in channels)
        distinct = list(dict.fromkeys(u.channel for u in units))
        rec.channels = distinct
        rec.message_count = sum(len(u.messages) for u in units)
        if len(distinct) > self.max_channels:
            raise AblyError(400, 90010, f"Maximum number of channels per request exceeded "
                                        f"({len(distinct)}; the maximum is {self.max_channels})")
        fault, delay, per_channel = self._take_faults(distinct, batch=True)
        legacy = _major(rec.version) < self.batch_results_from_version

        def process() -> web.Response:
            entries: list[tuple[int, dict[str, Any], bool]] = []  # (spec, result, ok)
            for unit in units:
                injected = per_channel.get(unit.channel)
                if injected is not None:
                    if "fail" not in rec.injected:
                        rec.injected.append("fail")
                    error = AblyError(injected.status, injected.code, injected.message)
                    entries.append((unit.spec, {"channel": unit.channel, "error": error.info()},
                                    False))
                    rec.failed_channels.append(unit.channel)
                    continue
                try:
                    result, duplicate = self._publish_unit(unit, rec)
                except AblyError as exc:
                    entries.append((unit.spec, {"channel": unit.channel, "error": exc.info()},
                                    False))
                    rec.failed_channels.append(unit.channel)
                    continue
                if duplicate:
                    rec.duplicate_channels.append(unit.channel)
                if legacy:
                    result = {"channel": result["channel"], "messageId": result["messageId"]}
                entries.append((unit.spec, result, True))
            if not legacy:
                out = []
                for n in range(len(specs)):
                    mine = [(r, ok) for s, r, ok in entries if s == n]
                    out.append({"successCount": sum(ok for _, ok in mine),
                                "failureCount": sum(not ok for _, ok in mine),
                                "results": [r for r, _ in mine]})
                return self._respond(request, rec, 201, out)
            results = [r for _, r, _ in entries]
            if all(ok for _, _, ok in entries):
                return self._respond(request, rec, 201, results)
            return self._error(request, rec, AblyError(400, 40020, "Batched response includes "
                                                                   "errors"),
                               {"batchResponse": results})

        return await self._serve(request, rec, fault, delay, process)

    async def _serve(self, request: web.Request, rec: RecordedRequest, fault: Fault | None,
                     delay: Fault | None, process: Callable[[], web.Response]
                     ) -> web.StreamResponse:
        """Apply the injected faults around processing a publish."""
        if delay is not None:
            rec.injected.append("delay")
            if not delay.deliver:
                await self._sleep(delay.seconds)
                raise AblyError(500, 50003, "Timeout waiting for the publish to complete")
        if fault is not None and fault.kind == "fail":
            rec.injected.append("fail")
            if delay is not None:
                await self._sleep(delay.seconds)
            raise AblyError(fault.status, fault.code, fault.message)
        if fault is not None and fault.kind == "disconnect":
            rec.injected.append("disconnect")
            if fault.deliver:
                with contextlib.suppress(AblyError):
                    process()
            if delay is not None:
                await self._sleep(delay.seconds)
            rec.status, rec.code = 0, None
            if request.transport is not None:
                request.transport.abort()
            with self._cond:
                self._cond.notify_all()
            raise asyncio.CancelledError  # aiohttp drops the request without answering
        try:
            response = process()
        except AblyError as exc:
            response = self._error(request, rec, exc)
        if delay is not None:
            await self._sleep(delay.seconds)
        return response

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _publish_unit(self, unit: _Unit, rec: RecordedRequest) -> tuple[dict[str, Any], bool]:
        """Check and deliver one channel's messages: (its result, whether it was a repeat)."""
        messages = unit.messages
        id_key = _idempotency_key(messages)
        size = sum(_message_size(m) for m in messages)
        if size > self.max_message_size:
            raise AblyError(400, 40009, f"Maximum message length exceeded (size: {size} bytes, "
                                        f"maximum: {self.max_message_size} bytes)")
        at, now = time.monotonic(), _now_ms()
        with self._lock:
            self._serial += 1
            serial = self._serial
        prefix = f"{secrets.token_urlsafe(8)[:10]}:{serial}"
        decoded: list[RecordedMessage] = []
        for n, m in enumerate(messages):
            data, encoding = _decode_data(m.get("data"), m.get("encoding"))
            name = m.get("name")
            if name is not None and not isinstance(name, str):
                raise AblyError(400, 40016, "Invalid message name: not a string")
            decoded.append(RecordedMessage(
                channel=unit.channel, name=name, id=m.get("id") or f"{prefix}:{n}", data=data,
                encoding=encoding, raw=m, client_id=m.get("clientId"), extras=m.get("extras"),
                at=at, request=rec.index, timestamp=now))
        with self._cond:
            key = (unit.channel, id_key) if id_key is not None else None
            if key is not None and key in self._seen:
                self._duplicates.extend(decoded)
                self._cond.notify_all()
                return self._seen[key], True
            result = {"channel": unit.channel,
                      "messageId": id_key if id_key is not None else prefix,
                      "serials": [f"{now:014d}-{serial:03d}@ably-endpoint:{n:03d}"
                                  for n in range(len(messages))]}
            if key is not None:
                self._seen[key] = result
            self._messages.extend(decoded)
            self._publish_times.setdefault(unit.channel, []).append((at, len(messages)))
            self._cond.notify_all()
        return result, False

    def _history(self, request: web.Request, rec: RecordedRequest, channel: str
                 ) -> web.Response:
        binary = "application/x-msgpack" in request.headers.get("Accept", "")
        items = []
        for m in reversed(self.messages(channel)):
            item = {k: v for k, v in m.raw.items() if k in ("name", "data", "encoding",
                                                            "clientId", "extras")}
            item.update(id=m.id, timestamp=m.timestamp)
            if isinstance(item.get("data"), bytes) and not binary:
                item["data"] = base64.b64encode(item["data"]).decode()
                item["encoding"] = "/".join(e for e in (item.get("encoding"), "base64") if e)
            items.append(item)
        return self._respond(request, rec, 200, items)

    async def _request_token(self, request: web.Request, rec: RecordedRequest,
                             key_name: str) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise AblyError(400, 40001, "A TokenRequest must be an object")
        if key_name != self.key_name or body.get("keyName") != self.key_name:
            raise AblyError(404, 40400, f"No key named {key_name!r}")
        sign_text = "\n".join(str(x) for x in (
            body.get("keyName") or "", body.get("ttl") or "", body.get("capability") or "",
            body.get("clientId") or "", body.get("timestamp") or 0, body.get("nonce") or "", ""))
        secret = self.key.partition(":")[2].encode()
        mac = base64.b64encode(hmac.new(secret, sign_text.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(mac.decode(), str(body.get("mac") or "")):
            raise AblyError(401, 40101, "Invalid mac")
        ttl = int(body.get("ttl") or self.token_ttl_ms)
        token = self.issue_token(ttl)
        issued = _now_ms()
        details = {"token": token, "keyName": self.key_name, "issued": issued,
                   "expires": issued + ttl, "capability": body.get("capability") or '{"*":["*"]}'}
        if body.get("clientId"):
            details["clientId"] = body["clientId"]
        return self._respond(request, rec, 200, details)


# ---------------------------------------------------------------------- Ably's rules


def _message_list(value: Any, where: str = "") -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return value
    raise AblyError(400, 40001, f"{where}messages must be a message object or a non-empty list "
                                "of them")


def _idempotency_key(messages: list[dict[str, Any]]) -> str | None:
    """The id (one message) or base (several) a publish is deduplicated by; checks the form."""
    ids = [m.get("id") for m in messages]
    if len(messages) == 1:
        if ids[0] is None:
            return None
        if not isinstance(ids[0], str) or not ids[0]:
            raise AblyError(400, 40031, "Client-specified message id cannot be empty")
        return ids[0]
    if all(i is None for i in ids):
        return None
    base: str | None = None
    for n, i in enumerate(ids):
        head, sep, index = i.rpartition(":") if isinstance(i, str) else ("", "", "")
        if not sep or not head or index != str(n) or (base is not None and head != base):
            raise AblyError(400, 40031, "Client-specified message ids do not match the required "
                                        "format for multi-message ProtocolMessages")
        base = head
    return base


def _message_size(m: dict[str, Any]) -> int:
    size = 0
    for k in ("name", "clientId", "id"):
        if isinstance(m.get(k), str):
            size += len(m[k].encode())
    if m.get("extras") is not None:
        size += len(json.dumps(m["extras"], separators=(",", ":")).encode())
    data, encoding = m.get("data"), m.get("encoding")
    if isinstance(data, str):
        if isinstance(encoding, str) and encoding.rstrip("/").endswith("base64"):
            size += len(data.rstrip("=")) * 3 // 4
        else:
            size += len(data.encode())
    elif isinstance(data, bytes | bytearray):
        size += len(data)
    elif isinstance(data, dict | list):
        size += len(json.dumps(data, separators=(",", ":"), default=str).encode())
    return size


def _decode_data(data: Any, encoding: Any) -> tuple[Any, str | None]:
    """(data decoded per encoding, the encoding as sent)."""
    if encoding is not None and not isinstance(encoding, str):
        raise AblyError(400, 40013, "Invalid message encoding: not a string")
    if data is not None and not isinstance(data, str | bytes | bytearray | dict | list):
        raise AblyError(400, 40013, f"Invalid message data type {type(data).__name__}")
    steps = [s for s in (encoding or "").split("/") if s]
    try:
        while steps:
            step = steps[-1]
            if step == "json":
                if isinstance(data, bytes | bytearray):
                    data = data.decode()
                if isinstance(data, str):
                    data = json.loads(data)
            elif step == "base64":
                if not isinstance(data, str | bytes | bytearray):
                    raise ValueError("base64 data must be a string")
                data = base64.b64decode(data, validate=True)
            elif step in ("utf-8", "utf8"):
                if isinstance(data, bytes | bytearray):
                    data = bytes(data).decode("utf-8")
            else:
                break  # cipher+..., vcdiff...: left as it came
            steps.pop()
    except (ValueError, binascii.Error) as exc:
        raise AblyError(400, 40013, f"Invalid message data or encoding {encoding!r}: "
                                    f"{exc}") from None
    return data, encoding


def _texts(value: Any) -> Any:
    """msgpack unpacked with raw=True: bytes that are UTF-8 text become str (keys included)."""
    if isinstance(value, dict):
        return {_texts(k): _texts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_texts(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    return value


def _auth_kind(header: str | None) -> str:
    if not header:
        return "none"
    scheme = header.partition(" ")[0].lower()
    return scheme if scheme in ("basic", "bearer") else "other"


def _major(version: str | None) -> int:
    match = re.match(r"\s*(\d+)", version or "")
    return int(match[1]) if match else 1


def _now_ms() -> int:
    return int(time.time() * 1000)


def _header_safe(text: str) -> str:
    return " ".join(text.split()).encode("ascii", "replace").decode()[:500]


# ---------------------------------------------------------------------- fixture


def _still_open(transport: asyncio.BaseTransport) -> bool:
    """Whether the transport's socket is still open (a TLS transport hands its socket on to
    none once the connection under it is gone)."""
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.fileno() != -1


@pytest.fixture
def ably_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[AblyEndpoint]:
    """A running ``AblyEndpoint`` (key ``DEFAULT_KEY``, token ``DEFAULT_TOKEN``) whose CA this
    process trusts: ``SSL_CERT_FILE`` is set for the test, so ``AblyRest`` clients made in it
    verify the endpoint's certificate (and loopback bypasses any proxy)."""
    endpoint = AblyEndpoint()
    endpoint.start()
    for name, value in endpoint.env().items():
        monkeypatch.setenv(name, value)
    try:
        yield endpoint
    finally:
        endpoint.close()
