"""A TCP proxy that can cut the network between the daemon and PostgreSQL.

It runs its own event loop in a thread, so it keeps forwarding whatever the test's loop is
doing (waiting on a subprocess, parsing a stream) and a blocked test cannot stall it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 65536


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.dead = False  # blackholed: read and discard both ways, never close
        self.tasks: list[asyncio.Task[None]] = []

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


class TcpProxy:
    """127.0.0.1:<free port> → ``upstream_host:upstream_port``.

    - forward (the initial mode): bytes flow both ways;
    - ``reset()``: every open connection is closed at once with a TCP RST on both sides (the
      daemon and the server see a reset); new connections forward as before;
    - ``blackhole()``: open connections stop forwarding and silently discard what arrives, their
      sockets stay open and nothing is closed; new connections are accepted and treated the
      same (never connected upstream): a half-open cut;
    - ``restore()``: new connections forward again; the blackholed ones stay dead but open, as
      a vanished peer would.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.blackholed = False
        self.accepted = 0
        self.resets = 0
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="faults-proxy",
                                        daemon=True)

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def reset(self) -> int:
        """Close every connection with a reset; the number closed."""
        return self._call(self._reset())

    def blackhole(self) -> int:
        """Cut silently; the number of open connections now dead."""
        return self._call(self._blackhole())

    def restore(self) -> None:
        self._call(self._restore())

    def open_links(self) -> int:
        return self._call(self._count())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ the proxy's own loop

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer)
        self._links.add(link)
        if self.blackholed:
            link.dead = True
            link.tasks = [asyncio.create_task(self._pump(link, reader, None))]
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host,
                                                                 self.upstream_port)
        except OSError:
            self._links.discard(link)
            _abort(writer)
            return
        link.upstream = up_writer
        if link.dead:  # blackholed while connecting
            link.tasks = [asyncio.create_task(self._pump(link, reader, None)),
                          asyncio.create_task(self._pump(link, up_reader, None))]
            return
        link.tasks = [asyncio.create_task(self._pump(link, reader, up_writer)),
                      asyncio.create_task(self._pump(link, up_reader, writer))]

    async def _pump(self, link: _Link, reader: asyncio.StreamReader,
                    to: asyncio.StreamWriter | None) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if link.dead:
                    if not data:  # the peer closed: stay open, as a vanished host would
                        await asyncio.Event().wait()
                    continue  # discard
                if not data:
                    break
                assert to is not None
                to.write(data)
                await to.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        if not link.dead:
            # One side closed: pass the close on, as a plain TCP path does.
            self._drop(link)

    def _drop(self, link: _Link, rst: bool = False) -> None:
        self._links.discard(link)
        for w in link.writers():
            if rst:
                _abort(w)
            else:
                with contextlib.suppress(Exception):
                    w.close()
        current = asyncio.current_task()
        for t in link.tasks:
            if t is not current:
                t.cancel()

    async def _reset(self) -> int:
        links = list(self._links)
        for link in links:
            self._drop(link, rst=True)
        self.resets += len(links)
        await asyncio.sleep(0)
        return len(links)

    async def _blackhole(self) -> int:
        self.blackholed = True
        for link in self._links:
            link.dead = True
        return len(self._links)

    async def _restore(self) -> None:
        self.blackholed = False

    async def _count(self) -> int:
        return len(self._links)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._drop(link, rst=True)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) rather than a FIN."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
