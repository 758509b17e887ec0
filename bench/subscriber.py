"""A Redis pub/sub subscriber in a process of its own, driven by bench/run.py.

It counts (and, with ``--record``, keeps with their receive time) the messages of one channel,
parsing the raw RESP stream with hiredis, so it keeps up with far more than the daemon sends
and takes no CPU from the process that measures. Standard library, hiredis and nothing else:
it starts in a few milliseconds.

Out (stdout, one line each): ``ready <t>``, ``first <t>`` (first message since the last reset),
``count <t> <n>`` (at most every 0.1 s, when it changed), ``done <t> <n>`` (the message that
reached ``expect``), ``dumped <n>``, ``closed <t>`` (Redis dropped the connection).
In (stdin): ``reset``, ``expect <n>``, ``dump <path>`` (receive time, a tab and the message,
one a line), ``quit``. Times are ``time.time()`` right after the bytes were read.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import hiredis


def resp(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(parts.path)
    elif parts.scheme == "redis":
        sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        raise SystemExit(f"subscriber: unsupported Redis URL scheme {parts.scheme!r}")
    sock.settimeout(5)
    if parts.password is not None:
        auth = (("AUTH", unquote(parts.username), unquote(parts.password)) if parts.username
                else ("AUTH", unquote(parts.password)))
        reader = hiredis.Reader()
        sock.sendall(resp(*auth))
        reply = read_one(sock, reader)
        if isinstance(reply, Exception):
            raise SystemExit(f"subscriber: AUTH refused: {reply}")
    return sock


def read_one(sock: socket.socket, reader: hiredis.Reader) -> object:
    while True:
        reply = reader.gets()
        if reply is not False:
            return reply
        data = sock.recv(65536)
        if not data:
            raise SystemExit("subscriber: connection closed")
        reader.feed(data)


def say(*words: object) -> None:
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--record", action="store_true", help="keep every message")
    parser.add_argument("--sample", type=Path, help="write the first message here")
    args = parser.parse_args()

    sock = connect(args.url)
    reader = hiredis.Reader()
    sock.sendall(resp("SUBSCRIBE", args.channel))
    reply = read_one(sock, reader)
    if not (isinstance(reply, list) and reply[0] == b"subscribe"):
        raise SystemExit(f"subscriber: unexpected reply {reply!r}")
    sock.setblocking(False)
    say("ready", f"{time.time():.6f}")

    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ)
    count, printed, last_print = 0, 0, 0.0
    expect: int | None = None
    records: list[tuple[float, bytes]] = []
    pending = b""
    sample_written = args.sample is None
    while True:
        ready = selector.select(timeout=0.1)
        now = time.time()
        for key, _ in ready:
            if key.fileobj is sock:
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                now = time.time()
                if not data:
                    say("closed", f"{now:.6f}")
                    return 1
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    if not (isinstance(reply, list) and reply[0] == b"message"):
                        continue
                    count += 1
                    if args.record:
                        records.append((now, reply[2]))
                    if count == 1:
                        say("first", f"{now:.6f}")
                        if not sample_written and args.sample is not None:
                            args.sample.write_bytes(reply[2])
                            sample_written = True
                    if expect is not None and count == expect:
                        say("done", f"{now:.6f}", count)
                continue
            chunk = os.read(stdin, 65536)
            if not chunk:
                return 0
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                command, _, arg = line.decode().strip().partition(" ")
                if command == "quit":
                    return 0
                if command == "reset":
                    count, printed, expect = 0, 0, None
                    records.clear()
                    say("reset")
                elif command == "expect":
                    expect = int(arg)
                    if count >= expect:
                        say("done", f"{time.time():.6f}", count)
                elif command == "dump":
                    with open(arg, "wb") as out:
                        for received, message in records:
                            out.write(b"%.6f\t%s\n" % (received, message))
                    say("dumped", len(records))
        if count != printed and now - last_print >= 0.1:
            say("count", f"{now:.6f}", count)
            printed, last_print = count, now


if __name__ == "__main__":
    sys.exit(main())
