"""Handlers: your Python code called for each change, at least once, in order per key.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python examples/handlers.py

It creates a table `example_orders` (if missing), attaches three handlers (two before start,
one while running), writes a few changes, prints what each handler received, and stops. Its
capture stays installed in the schema `pgconnector_example` for the next run.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading

import asyncpg

from connector import ChangeEvent, Connector

DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

connector = Connector({"postgres": {"dsn": DSN, "schema": "pgconnector_example"}})
seen: collections.Counter[str] = collections.Counter()  # calls per handler
_stdout = threading.Lock()  # plain-function handlers print from their threads


def say(line: str) -> None:
    with _stdout:
        print(line, flush=True)


@connector.on("public.example_orders", "insert", "update", where={"status": "paid"})
async def paid(event: ChangeEvent) -> None:
    """Only orders that are (or became) paid; async handlers run on the event loop."""
    assert event.new is not None
    say(f"paid: order {event.new['id']} of {event.new['customer']}: {event.new['total']}")
    seen["paid"] += 1


@connector.on("example_orders", key="customer", concurrency=4, retry={"max_attempts": 3},
              timeout=10)
def ship(event: ChangeEvent) -> None:
    """A plain function runs in a thread pool; one customer's orders one at a time."""
    row = event.row or {}
    say(f"ship: {event.op} order {row.get('id')} (changed: {sorted(event.changes or {})})")
    seen["ship"] += 1


async def main() -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS example_orders (id serial PRIMARY KEY, "
                           "customer text NOT NULL, total numeric(10, 2), status text)")
        async with connector:  # installs capture for the handlers' tables, then streams

            async def per_transaction(events: list[ChangeEvent]) -> None:
                say(f"transaction {events[0].txid}: {len(events)} change(s)")
                seen["transactions"] += 1

            # Attached while running: it sees only changes committed from now on.
            sub = await connector.subscribe("example_orders", per_transaction,
                                            batch="transaction")
            async with conn.transaction():
                order = await conn.fetchval(
                    "INSERT INTO example_orders (customer, total, status) "
                    "VALUES ('ada', 12.50, 'new') RETURNING id")
                await conn.execute("INSERT INTO example_orders (customer, total, status) "
                                   "VALUES ('bob', 99.00, 'paid')")
            await conn.execute("UPDATE example_orders SET status = 'paid' WHERE id = $1", order)
            await conn.execute("DELETE FROM example_orders WHERE id = $1", order)
            for _ in range(300):  # 2 paid, 4 shipped, 3 transactions: at most 30 s
                if seen["paid"] >= 2 and seen["ship"] >= 4 and seen["transactions"] >= 3:
                    break
                await asyncio.sleep(0.1)
            await sub.detach()
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
