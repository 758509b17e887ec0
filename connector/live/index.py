"""Which subscriptions an event may concern, without asking each one: a subscription whose
filter is one ``eq`` on a text or integer column is indexed by that value, the others are
scanned per table. A pre-filter only - every candidate still renders the event itself - so
it never drops what a subscription would match: an indexed subscription can only match a
row whose column equals its value (the old row's too, for a row that leaves it). Measured:
1,000 clients filtered to 1 % of 1,000 changes/s took a whole core scanning them all."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from connector.live.protocol import Subscription
from connector.live.replay import Entry

C = TypeVar("C", bound=Hashable)  # a client

# Types whose JSON value (str or int) equals the bound filter value exactly when PostgreSQL
# would say so; others (numeric scales, timestamps, citext, …) are scanned.
_INDEXABLE = frozenset({"text", "character varying", "varchar", "smallint", "integer",
                        "bigint", "int2", "int4", "int8", "uuid", "name"})


def _eq_key(sub: Subscription) -> tuple[str, Any] | None:
    f = sub.where
    if f is None or f.any_of or len(f.conditions) != 1:
        return None
    c = f.conditions[0]
    if c.op != "eq" or sub.info.types.get(c.column) not in _INDEXABLE:
        return None
    if isinstance(c.value, bool) or not isinstance(c.value, str | int):
        return None
    return c.column, c.value


class SubscriptionIndex(Generic[C]):
    def __init__(self) -> None:
        self._scan: dict[tuple[str, str], dict[tuple[C, str], Subscription]] = {}
        self._eq: dict[tuple[str, str, str], dict[Any, dict[tuple[C, str], Subscription]]] = {}
        self._where: dict[tuple[C, str], tuple[tuple[str, str], tuple[str, Any] | None]] = {}

    def add(self, client: C, sub: Subscription) -> None:
        self.remove(client, sub.id)
        table = (sub.table.schema, sub.table.name)
        key = _eq_key(sub)
        if key is None:
            self._scan.setdefault(table, {})[(client, sub.id)] = sub
        else:
            self._eq.setdefault((*table, key[0]), {}).setdefault(key[1], {})[
                (client, sub.id)] = sub
        self._where[(client, sub.id)] = (table, key)

    def remove(self, client: C, sub_id: str) -> None:
        where = self._where.pop((client, sub_id), None)
        if where is None:
            return
        table, key = where
        if key is None:
            self._scan.get(table, {}).pop((client, sub_id), None)
        else:
            by_value = self._eq.get((*table, key[0]), {})
            subs = by_value.get(key[1], {})
            subs.pop((client, sub_id), None)
            if not subs:
                by_value.pop(key[1], None)

    def candidates(self, entry: Entry) -> dict[C, list[Subscription]]:
        """The subscriptions that may want ``entry``, per client, each once."""
        out: dict[C, list[Subscription]] = {}
        seen: set[tuple[C, str]] = set()

        def take(subs: dict[tuple[C, str], Subscription]) -> None:
            for k, sub in subs.items():
                if k not in seen:
                    seen.add(k)
                    out.setdefault(k[0], []).append(sub)

        take(self._scan.get((entry.schema, entry.table), {}))
        rows = [r for r in (entry.data.get("new"), entry.data.get("old")) if isinstance(r, dict)]
        for (schema, table, column), by_value in self._eq.items():
            if (schema, table) != (entry.schema, entry.table):
                continue
            for row in rows:
                value = row.get(column)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    take(by_value.get(value, {}))
        return out
