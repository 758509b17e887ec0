"""The handlers bench H has the daemon run (config ``handlers:``, ``call:
bench.handler_sink:<name>``). They report to the file ``BENCH_HANDLER_OUT`` names:

* ``noop``: nothing per event; once it has seen ``BENCH_HANDLER_EXPECT`` events, one line
  with the wall time.
* ``stamp``: per event, the wall time it was called and the row's ``name`` and
  ``updated_at`` (the writer's clock before COMMIT), for latency.
* ``sleepy``: sleeps 10 ms per event; per event, the row's ``name`` and ``id`` (order per
  key is checked from them), and the wall time when it has seen ``BENCH_HANDLER_EXPECT``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

OUT = os.environ.get("BENCH_HANDLER_OUT", os.devnull)
EXPECT = int(os.environ.get("BENCH_HANDLER_EXPECT", "0"))
_seen = 0
_out = open(OUT, "a", buffering=1)  # noqa: SIM115 - one file for the process's life, by line


def _count() -> None:
    global _seen
    _seen += 1
    if _seen == EXPECT:
        _out.write(f"done {time.time():.6f}\n")


async def noop(event: Any) -> None:
    _count()


async def stamp(event: Any) -> None:
    at = time.time()
    _out.write(f"{at:.6f} {event.new['name']} {event.new['updated_at']}\n")


async def sleepy(event: Any) -> None:
    await asyncio.sleep(0.01)
    _out.write(f"{event.new['name']} {event.new['id']}\n")
    _count()
