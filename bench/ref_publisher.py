"""P3's reference, in a process of its own: plain redis-py (asyncio, hiredis, as the daemon
uses it) publishing ``--count`` copies of a real event, ``--batch`` per pipelined round trip,
with ``PUBLISH`` (pubsub) or ``XADD`` (stream), exactly the commands the daemon sends. No
PostgreSQL: the floor of the Redis hop for the same payloads.

Prints ``start <t>`` before the first command and ``end <t>`` once Redis acknowledged the last.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

ID = re.compile(rb'"id":"(\d+)-(\d+)"')


def payloads(sample: bytes) -> tuple[bytes, bytes, int, int]:
    """The sample split around its id, so each copy gets an id of its own of the same size:
    (before, after, txid, first outbox id)."""
    match = ID.search(sample)
    if match is None:
        raise SystemExit("ref_publisher: no event id in the sample")
    return sample[:match.start()], sample[match.end():], int(match[1]), int(match[2])


async def publish(args: argparse.Namespace) -> None:
    before, after, txid, first = payloads(args.sample.read_bytes())
    client = aioredis.Redis.from_url(args.url, socket_timeout=None)
    try:
        await client.ping()
        print("start", f"{time.time():.6f}", flush=True)
        for start in range(0, args.count, args.batch):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(args.count, start + args.batch)):
                payload = b'%s"id":"%d-%d"%s' % (before, txid, first + i, after)
                if args.mode == "stream":
                    pipe.xadd(args.channel, {"event": payload, "op": "insert"},
                              maxlen=None, approximate=True)
                else:
                    pipe.publish(args.channel, payload)
            await pipe.execute(raise_on_error=True)
        print("end", f"{time.time():.6f}", flush=True)
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--mode", choices=("pubsub", "stream"), default="pubsub")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--sample", type=Path, required=True, help="one event, as published")
    asyncio.run(publish(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
