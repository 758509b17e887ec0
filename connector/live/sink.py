"""The live sink: a Publisher whose ``publish`` puts each batch into the replay buffer and
every subscribed client's bounded queue, and whose endpoints (aiohttp) serve the clients:
WebSocket at ``{path}``, SSE at ``{path}/sse``.

What the engine waits for is the buffer only: a batch is acknowledged once it is there, and
a client that falls ``client_queue`` events behind is told to resynchronise and closed, so
no client can slow the pipeline, the other clients, or the daemon's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from importlib import resources
from typing import Any, ClassVar

import structlog
from aiohttp import WSMsgType, web

from connector.binding import TableInfo
from connector.live.auth import AuthError, Identity, Verifier
from connector.live.index import SubscriptionIndex
from connector.live.protocol import (
    Catalog,
    ProtocolError,
    Subscription,
    dumps,
    parse_message,
)
from connector.live.replay import Entry, ReplayBuffer
from connector.metrics import Metrics
from connector.publishers.base import Publisher
from connector.vocabulary import LiveConfig, Message, TableName

log = structlog.get_logger("pgconnector.live")

AUTH_WAIT = 10.0  # seconds a WebSocket client has to send its auth message
CLOSE_AUTH = 4401  # the token is missing, invalid or expired
CLOSE_SLOW = 1013  # "try again later": fell client_queue events behind
SSE_PING = 15.0  # seconds between SSE comments, so proxies keep the stream open
CATCH_UP = 0.5  # seconds a batch gives clients left behind by it to catch up
_EXACT = json.JSONDecoder(parse_float=Decimal)
_RESYNC = dumps({"type": "resync"})


class Client:
    """One connection's subscriptions and its bounded queue of (event id, text)."""

    def __init__(self, identity: Identity, queue_size: int,
                 on_slow: Callable[[Client], None]) -> None:
        self.identity = identity
        self.subscriptions: dict[str, Subscription] = {}
        # Unbounded while a batch is offered (a batch arrives at once; clients send at their
        # pace), then held to queue_size at the batch's end (LiveSink.publish).
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.limit = queue_size
        self.on_slow = on_slow
        self.slow = False
        self.dropped = asyncio.Event()

    @property
    def behind(self) -> bool:
        return self.queue.qsize() > self.limit

    def give_up(self) -> None:
        """Too slow: it gets a resync and is closed (by its connection's handler, which
        waits on ``dropped``)."""
        if not self.slow:
            self.slow = True
            self.on_slow(self)
            self.dropped.set()

    def render(self, entry: Entry, subs: list[Subscription] | None = None,
               cache: dict[str, str | None] | None = None) -> list[str]:
        """The event messages for ``entry`` (``subs``: only those of these subscriptions),
        in the order the client subscribed."""
        out = []
        chosen: Iterable[Subscription] = self.subscriptions.values()
        if subs is not None and len(subs) > 1:
            ids = {sub.id for sub in subs}
            chosen = [sub for sub in self.subscriptions.values() if sub.id in ids]
        elif subs is not None:
            chosen = subs
        for sub in chosen:
            if sub.table.schema != entry.schema or sub.table.name != entry.table:
                continue
            if cache is None:
                text = _render(sub, entry)
            elif sub.signature in cache:
                text = cache[sub.signature]
            else:
                text = cache[sub.signature] = _render(sub, entry)
            if text is not None:
                out.append(text)
        return out

    def offer(self, entry: Entry, subs: list[Subscription] | None = None,
              cache: dict[str, str | None] | None = None) -> None:
        if self.slow:
            return
        for text in self.render(entry, subs, cache):
            self.queue.put_nowait((entry.id, text))


def _render(sub: Subscription, entry: Entry) -> str | None:
    event = sub.render(entry)
    if event is None:
        return None
    return dumps({"type": "event", "subscription": sub.id, "event": event})


class LiveSink(Publisher):
    type_name: ClassVar[str] = "live"
    options_schema: ClassVar[dict[str, Any] | None] = {"type": "object"}
    serving: ClassVar[bool] = True

    def __init__(self, name: str, config: LiveConfig, *, own_listener: bool = True,
                 metrics: Metrics | None = None) -> None:
        super().__init__(name, {})
        self.config = config
        self.metrics = metrics or Metrics()
        self.own_listener = own_listener
        self.verifier = Verifier(config.auth)
        self.replay = ReplayBuffer(config.replay_events, config.replay_seconds)
        self.catalog = Catalog({}, config.rules)
        self.clients: set[Client] = set()
        self.index: SubscriptionIndex[Client] = SubscriptionIndex()
        self._runner: web.AppRunner | None = None
        self._port = config.port

    @property
    def port(self) -> int:
        """The port listened on (its own listener; ``port: 0`` picks one)."""
        return self._port

    def bind(self, infos: Mapping[TableName, TableInfo]) -> None:
        """The tables as they are (columns and types for the clients' filters)."""
        self.catalog = Catalog({t: infos[t] for t in self.config.tables if t in infos},
                               self.config.rules)

    # ------------------------------------------------------------------ the engine's side

    async def open(self) -> None:
        if not self.own_listener or self._runner is not None:
            return
        app = web.Application()
        self.mount(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.config.host, self.config.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise RuntimeError(f"live: cannot listen on {self.config.host}:{self.config.port}:"
                               f" {exc.strerror or exc}") from None
        self._runner = runner
        if self._port == 0:
            self._port = runner.addresses[0][1]
        log.info("live_listening", host=self.config.host, port=self._port,
                 path=self.config.path)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def publish(self, messages: Sequence[Message]) -> None:
        """Into the replay buffer and every client's queue. A client left more than
        ``client_queue`` events behind by the batch has CATCH_UP seconds (for all such
        clients together) to get back under it, or it is given up: so the pipeline waits
        at most that long, and only in a batch that leaves someone behind."""
        clients = list(self.clients)
        for m in messages:
            e = m.event
            entry = self.replay.add(m.message_id, e.schema, e.table, m.name,
                                    _EXACT.decode(m.payload.decode()))
            cache: dict[str, str | None] = {}  # one rendering per signature and event
            for client, subs in self.index.candidates(entry).items():
                if client in self.clients:  # attached (its backlog taken), not given up
                    client.offer(entry, subs, cache)
        behind = [c for c in clients if c.behind and not c.slow]
        deadline = asyncio.get_running_loop().time() + CATCH_UP
        while behind and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
            behind = [c for c in behind if c.behind and not c.slow]
        for client in behind:
            client.give_up()

    def mount(self, app: web.Application) -> None:
        path = self.config.path
        app.router.add_get(path, self._websocket)
        app.router.add_get(f"{path}/sse", self._sse)
        app.router.add_get(f"{path}/demo", self._demo)

    async def _demo(self, request: web.Request) -> web.Response:
        """The demo page (connector/live/demo.html), shipped in the package."""
        page = resources.files("connector.live").joinpath("demo.html").read_text()
        return web.Response(text=page, content_type="text/html",
                            headers={"X-Content-Type-Options": "nosniff",
                                     "Cache-Control": "no-store"})

    # ------------------------------------------------------------------ shared

    def _check_origin(self, request: web.Request) -> None:
        allowed = self.config.allowed_origins
        origin = request.headers.get("Origin")
        if allowed is not None and origin is not None and origin not in allowed:
            raise web.HTTPForbidden(text=f"origin {origin!r} is not allowed\n")

    @staticmethod
    def _token(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip() or None
        return request.query.get("token") or None

    def _subscribe_queries(self, client: Client, queries: list[str]) -> list[str]:
        """Subscribe each ``query=``; the error lines for those refused."""
        errors = []
        for i, text in enumerate(queries):
            try:
                self._add(client, self.catalog.from_query(i, text, client.identity.claims))
            except ProtocolError as exc:
                errors.append(dumps({"type": "error", "id": exc.id, "message": str(exc)}))
        return errors

    def _add(self, client: Client, sub: Subscription) -> None:
        if sub.id not in client.subscriptions and (
                len(client.subscriptions) >= self.config.max_subscriptions):
            raise ProtocolError(f"at most {self.config.max_subscriptions} subscriptions per "
                                "client", sub.id)
        client.subscriptions[sub.id] = sub
        self.index.add(client, sub)
        self._gauges()

    def _gauges(self) -> None:
        self.metrics.live_clients(len(self.clients),
                                  sum(len(c.subscriptions) for c in self.clients))

    def _attach(self, client: Client, since: str | None
                ) -> tuple[list[tuple[str, str]], bool]:
        """Register the client and take what it missed, at once (nothing can come between):
        the texts to send before its queue, and whether it must resynchronise instead."""
        self.clients.add(client)
        self._gauges()
        if since is None:
            return [], False
        entries = self.replay.after(since)
        if entries is None:
            self.metrics.live_resync("resume")
            return [], True
        return [(entry.id, text) for entry in entries for text in client.render(entry)], False

    def _detach(self, client: Client) -> None:
        for sub_id in client.subscriptions:
            self.index.remove(client, sub_id)
        if client in self.clients:
            self.clients.discard(client)
            self._gauges()

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        self._check_origin(request)
        token = self._token(request)
        identity: Identity | None = None
        if token is not None or self.config.auth.anonymous:
            try:
                identity = self.verifier.verify(token)
            except AuthError as exc:
                self.metrics.live_auth_failure()
                raise web.HTTPUnauthorized(text=f"{exc}\n") from None
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=self.config.max_message_bytes)
        await ws.prepare(request)
        try:
            if identity is None:
                identity = await self._await_auth(ws)
                if identity is None:
                    return ws
            await self._serve_websocket(request, ws, identity)
        finally:
            if not ws.closed:
                await ws.close()
        return ws

    async def _await_auth(self, ws: web.WebSocketResponse) -> Identity | None:
        try:
            msg = await ws.receive(timeout=AUTH_WAIT)
        except TimeoutError:
            await ws.close(code=CLOSE_AUTH, message=b"no auth message")
            return None
        if msg.type != WSMsgType.TEXT:
            await ws.close(code=CLOSE_AUTH, message=b"expected an auth message")
            return None
        try:
            parsed = parse_message(msg.data, self.config.max_message_bytes)
            if parsed["type"] != "auth":
                raise ProtocolError("the first message must be auth (no token was given)")
            return self.verifier.verify(parsed["token"])
        except (ProtocolError, AuthError) as exc:
            self.metrics.live_auth_failure()
            await ws.close(code=CLOSE_AUTH, message=str(exc).encode()[:120])
            return None

    async def _serve_websocket(self, request: web.Request, ws: web.WebSocketResponse,
                               identity: Identity) -> None:
        client = Client(identity, self.config.client_queue, self._detach)
        for line in self._subscribe_queries(client, request.query.getall("query", [])):
            await ws.send_str(line)
        backlog, resync = self._attach(client, request.query.get("since"))
        writer = asyncio.create_task(self._write_ws(ws, client, backlog, resync))
        expiry = asyncio.create_task(self._expire(identity))
        reader = asyncio.create_task(self._read_ws(ws, client))
        slowed = asyncio.create_task(client.dropped.wait())
        try:
            await asyncio.wait({writer, reader, expiry, slowed},
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._detach(client)
            for task in (writer, reader, expiry, slowed):
                task.cancel()
            if client.slow:
                self.metrics.live_resync("slow")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.send_str(_RESYNC), 1.0)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code=CLOSE_SLOW,
                                                    message=b"too slow: resync"), 1.0)
            elif expiry.done() and not expiry.cancelled():
                await ws.close(code=CLOSE_AUTH, message=b"the token has expired")

    async def _write_ws(self, ws: web.WebSocketResponse, client: Client,
                        backlog: list[tuple[str, str]], resync: bool) -> None:
        if resync:
            await ws.send_str(_RESYNC)
        for _, text in backlog:
            await ws.send_str(text)
        self.metrics.live_sent("websocket", len(backlog))
        while True:
            _, text = await client.queue.get()
            await ws.send_str(text)
            self.metrics.live_sent("websocket")

    async def _read_ws(self, ws: web.WebSocketResponse, client: Client) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                await ws.send_str(dumps({"type": "error", "id": None,
                                         "message": "expected text (JSON) messages"}))
                continue
            try:
                parsed = parse_message(msg.data, self.config.max_message_bytes)
                await self._handle(client, parsed, ws)
            except ProtocolError as exc:
                await ws.send_str(dumps({"type": "error", "id": exc.id, "message": str(exc)}))

    async def _handle(self, client: Client, msg: dict[str, Any],
                      ws: web.WebSocketResponse) -> None:
        kind = msg["type"]
        if kind == "auth":
            raise ProtocolError("already authenticated")
        if kind == "unsubscribe":
            if client.subscriptions.pop(msg["id"], None) is None:
                raise ProtocolError("no such subscription", msg["id"])
            self.index.remove(client, msg["id"])
            self._gauges()
            await ws.send_str(dumps({"type": "unsubscribed", "id": msg["id"]}))
            return
        sub = self.catalog.subscription(msg["id"], msg["table"], msg.get("operations"),
                                        msg.get("where"), msg.get("columns"),
                                        client.identity.claims)
        self._add(client, sub)
        await ws.send_str(dumps({"type": "subscribed", "id": sub.id}))

    @staticmethod
    async def _expire(identity: Identity) -> None:
        left = identity.seconds_left()
        if left is None:
            await asyncio.Event().wait()  # never
        await asyncio.sleep(max(0.0, left or 0.0))

    # ------------------------------------------------------------------ SSE

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        self._check_origin(request)
        try:
            identity = self.verifier.verify(self._token(request))
        except AuthError as exc:
            self.metrics.live_auth_failure()
            raise web.HTTPUnauthorized(text=f"{exc}\n") from None
        client = Client(identity, self.config.client_queue, self._detach)
        queries = request.query.getall("query", [])
        if not queries:
            raise web.HTTPBadRequest(text="give at least one query= parameter\n")
        errors = self._subscribe_queries(client, queries)
        if errors:
            raise web.HTTPBadRequest(text="".join(
                json.loads(e)["message"] + "\n" for e in errors))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        since = request.headers.get("Last-Event-ID") or request.query.get("since")
        backlog, resync = self._attach(client, since)
        try:
            if resync:
                await response.write(b"event: resync\ndata: " + _RESYNC.encode() + b"\n\n")
            for event_id, text in backlog:
                await response.write(_sse_event(event_id, text))
            expiry = asyncio.create_task(self._expire(identity))
            try:
                while not client.dropped.is_set() and not expiry.done():
                    try:
                        event_id, text = await asyncio.wait_for(client.queue.get(), SSE_PING)
                    except TimeoutError:
                        await response.write(b": ping\n\n")
                        continue
                    await response.write(_sse_event(event_id, text))
                    self.metrics.live_sent("sse")
            finally:
                expiry.cancel()
            if client.slow:
                self.metrics.live_resync("slow")
                await response.write(b"event: resync\ndata: " + _RESYNC.encode() + b"\n\n")
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self._detach(client)
        return response


def _sse_event(event_id: str, text: str) -> bytes:
    return f"id: {event_id}\ndata: {text}\n\n".encode()
