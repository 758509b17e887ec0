"""What the application's tables look like: columns, types and keys, read from the catalogs
for binding routes to them (connector/binding.py)."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from connector.binding import TableInfo, filter_type
from connector.store.queries import load
from connector.vocabulary import TableName


async def table_info(conn: asyncpg.Connection,
                     tables: Iterable[TableName]) -> dict[TableName, TableInfo]:
    wanted = sorted(set(tables), key=str)
    rows = await conn.fetch(load("table_columns"), [t.schema for t in wanted],
                            [t.name for t in wanted])
    grouped: dict[TableName, list[asyncpg.Record]] = {}
    for r in rows:
        grouped.setdefault(TableName(r["schema_name"], r["table_name"]), []).append(r)
    out = {}
    for table, cols in grouped.items():
        key = sorted((r for r in cols if r["key_position"] is not None),
                     key=lambda r: r["key_position"])
        out[table] = TableInfo(
            columns=tuple(r["column_name"] for r in cols),
            declared={r["column_name"]: r["type_name"] for r in cols},
            types={r["column_name"]: filter_type(r["base_type"] or r["type_name"],
                                                 bool(r["is_enum"])) for r in cols},
            key=tuple(r["column_name"] for r in key),
            generated=frozenset(r["column_name"] for r in cols if r["generated"]))
    return out
