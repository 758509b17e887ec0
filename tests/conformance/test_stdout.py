"""The stdout publisher against the conformance suite, its output read from a real pipe (the way
it is used: ``pgconnector start | consumer``), a named one so that its consumer can go away and
come back (``pgconnector start > fifo``): the outage."""

from __future__ import annotations

import contextlib
import os
import select
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO, ClassVar

import orjson
import pytest

from connector.conformance import (
    Outage,
    PublisherConformance,
    PublisherFactory,
    Receiver,
    not_applicable,
)
from connector.publishers.stdout import StdoutPublisher

_EVENT_KEY = b',"event":'


class FifoReader(Receiver):
    """The consumer at the far end of a named pipe, reading in a thread: the adapter writes
    synchronously, so a full pipe (64 KiB) blocks it until this side drains it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self._lock = threading.Lock()
        self._got: dict[str, list[bytes]] = {}
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None
        self.connect()
        # Opening for writing needs a reader: there is one now.
        self.writer: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()

    def connect(self) -> None:
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._leaving = threading.Event()
        self._thread = threading.Thread(target=self._read, name="stdout-fifo", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        """Read what was written, then close: writes fail with EPIPE until ``connect``."""
        assert self._thread is not None
        self._leaving.set()
        self._thread.join(10)
        os.close(self._fd)

    def _read(self) -> None:
        pending = b""
        while True:
            leaving = self._leaving.is_set()
            select.select([self._fd], [], [], 0.05)
            try:
                chunk = os.read(self._fd, 1 << 20)
            except BlockingIOError:
                chunk = b""
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._take(line)
            if leaving and not chunk:  # drained: everything written before leaving was read
                if pending:
                    self.errors.append(f"a partial line when the reader left: {pending[:80]!r}")
                return

    def _take(self, line: bytes) -> None:
        """The envelope splices the event in after ``,"event":``, a key, so never inside a
        JSON string (where quotes are escaped): the bytes after it are the payload as sent."""
        try:
            envelope = orjson.loads(line)
            payload = line[line.index(_EVENT_KEY) + len(_EVENT_KEY):-1]
            if orjson.loads(payload) != envelope["event"]:
                raise ValueError("the event is not the envelope's last member")
        except Exception as exc:  # not the envelope: the check fails with it
            self.errors.append(f"{exc}: {line[:80]!r}")
            return
        with self._lock:
            self._got.setdefault(str(envelope["channel"]), []).append(payload)

    async def received(self, channel: str) -> list[bytes]:
        assert not self.errors, self.errors
        with self._lock:
            return list(self._got.get(channel, []))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.writer.close()
        self.disconnect()


class TestStdout(PublisherConformance):
    publisher_class: ClassVar[type[StdoutPublisher]] = StdoutPublisher  # see test_checks_fail
    publish_timeout = 5.0

    @pytest.fixture
    def fifo(self) -> Iterator[FifoReader]:
        with tempfile.TemporaryDirectory(prefix="pgc-stdout-") as tmp:
            reader = FifoReader(Path(tmp) / "out")
            yield reader
            reader.close()

    @pytest.fixture
    def make_publisher(self, fifo: FifoReader) -> PublisherFactory:
        return lambda: self.publisher_class("conformance", {"envelope": True},
                                            stream=fifo.writer)

    @pytest.fixture
    def receiver(self, fifo: FifoReader) -> Receiver:
        return fifo

    @pytest.fixture
    def outage(self, fifo: FifoReader) -> Outage:
        """The consumer closes the pipe (writes fail with EPIPE), then a new one opens it."""

        @contextlib.asynccontextmanager
        async def gone() -> AsyncIterator[None]:
            fifo.disconnect()
            try:
                yield
            finally:
                fifo.connect()

        return gone

    partial_failure = not_applicable(
        "stdout writes a batch with one write: it cannot fail some messages and not others")
    rejected_message = not_applicable(
        "stdout refuses no message: it writes whatever bytes it is given")
