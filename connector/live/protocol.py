"""What live clients send and receive, pure: subscriptions from a query string
(``insert:users:id.eq.5``, connector/filters/compact.py) or a JSON message, checked against
the tables that may be subscribed and the row rules; each event rendered for one
subscription (or not at all). Everything a client sends is hostile until checked here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from connector.binding import TableInfo
from connector.filters.bind import bind_types
from connector.filters.compact import parse_compact
from connector.filters.evaluation import evaluate
from connector.filters.parse import parse_where
from connector.live.replay import Entry
from connector.vocabulary import (
    OPERATIONS,
    Condition,
    Filter,
    LiveRule,
    TableName,
    parse_table,
)

MAX_ID = 64  # characters of a subscription id
_FIELDS = {
    "subscribe": ({"type", "id", "table"}, {"operations", "where", "columns"}),
    "unsubscribe": ({"type", "id"}, set()),
    "auth": ({"type", "token"}, set()),
}


class ProtocolError(Exception):
    """One clear line for the client; ``id`` names the subscription it concerns."""

    def __init__(self, message: str, id: str | None = None) -> None:
        super().__init__(message)
        self.id = id


@dataclass(frozen=True)
class Subscription:
    """One subscription of one client: which operations of which table, which rows (its own
    ``where`` and, always ANDed on, the rules' ``where_claims``), which columns."""

    id: str
    table: TableName
    operations: frozenset[str]
    info: TableInfo
    where: Filter | None = None  # typed
    claims: Filter | None = None  # typed; the client cannot widen it
    columns: frozenset[str] | None = None
    # Equal for subscriptions that render every event alike (their id included): the live
    # sink renders once per signature and event, not once per client. Computed once.
    signature: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "signature", repr((
            self.id, str(self.table), sorted(self.operations), self.where, self.claims,
            sorted(self.columns) if self.columns is not None else None)))

    def render(self, entry: Entry) -> dict[str, Any] | None:
        """The event as this subscription sends it, or None when it is not for it. A row
        that leaves the rows it may see arrives as a delete of its old version, one that
        enters them as an insert of its new version, and nothing of the other version."""
        data = entry.data
        op: str | None = entry.op
        new, old = data.get("new"), data.get("old")
        if op != "truncate":
            for f in (self.claims, self.where):
                if f is None or op is None:
                    continue
                new_ok = isinstance(new, dict) and evaluate(f, new, self.info.types)
                old_ok = isinstance(old, dict) and evaluate(f, old, self.info.types)
                op, new, old = _transition(op, new, old, new_ok, old_ok)
        if op is None or op not in self.operations:
            return None
        out = dict(data)
        out["op"], out["new"], out["old"] = op, self._keep(new), self._keep(old)
        if op == "update" and isinstance(out["new"], dict) and isinstance(out["old"], dict):
            before = out["old"]
            out["changes"] = {k: {"old": before.get(k), "new": v} for k, v in out["new"].items()
                              if before.get(k) != v}
        else:
            out.pop("changes", None)
        return out

    def _keep(self, row: Any) -> Any:
        if self.columns is None or not isinstance(row, dict):
            return row
        return {k: v for k, v in row.items() if k in self.columns}


def _transition(op: str, new: Any, old: Any, new_ok: bool, old_ok: bool
                ) -> tuple[str | None, Any, Any]:
    if op == "insert":
        return ("insert", new, None) if new_ok else (None, None, None)
    if op == "delete":
        return ("delete", None, old) if old_ok else (None, None, None)
    if new_ok and old_ok:
        return "update", new, old
    if old_ok:
        return "delete", None, old  # it left: its old version only
    if new_ok:
        return "insert", new, None  # it entered: its new version only
    return None, None, None


class Catalog:
    """What may be subscribed: the tables (with their columns and types) and the row rules;
    builds subscriptions for one client's claims."""

    def __init__(self, infos: Mapping[TableName, TableInfo], rules: tuple[LiveRule, ...]
                 ) -> None:
        self.infos = dict(infos)
        self.rules = {r.table: r for r in rules}

    def subscription(self, id: str, table: str, operations: Any, where: Any, columns: Any,
                     claims: Mapping[str, Any], *, compact_filter: Filter | None = None
                     ) -> Subscription:
        try:
            name = parse_table(table)
        except (ValueError, TypeError):
            raise ProtocolError(f"invalid table name {table!r}", id) from None
        info = self.infos.get(name)
        if info is None:
            raise ProtocolError(f"table {name} cannot be subscribed", id)
        ops = OPERATIONS if operations is None else operations
        if not isinstance(ops, list | tuple | frozenset) or not ops or any(
                o not in OPERATIONS for o in ops):
            raise ProtocolError(f"operations: expected a list of {', '.join(OPERATIONS)}", id)
        typed_where = None
        raw_filter = compact_filter
        if where is not None:
            if not isinstance(where, dict):
                raise ProtocolError("where: expected an object", id)
            raw_filter, problems = parse_where(where, "where")
            if problems:
                raise ProtocolError(problems[0], id)
        if raw_filter is not None:
            typed_where, problems = bind_types(raw_filter, info.types, "where", table=str(name))
            if problems:
                raise ProtocolError(problems[0], id)
        keep = None
        if columns is not None:
            if not isinstance(columns, list) or not columns or not all(
                    isinstance(c, str) for c in columns):
                raise ProtocolError("columns: expected a list of column names", id)
            unknown = [c for c in columns if c not in info.columns]
            if unknown:
                raise ProtocolError(f"columns: unknown column {unknown[0]!r} in {name}", id)
            keep = frozenset(columns) | frozenset(info.key)
        return Subscription(id, name, frozenset(ops), info, typed_where,
                            self._claims(name, info, claims, id), keep)

    def _claims(self, table: TableName, info: TableInfo, claims: Mapping[str, Any],
                id: str) -> Filter | None:
        rule = self.rules.get(table)
        if rule is None:
            return None
        conditions = []
        for column, claim in rule.where_claims.items():
            value = claims.get(claim)
            if value is None or isinstance(value, dict | list | bool):
                raise ProtocolError(f"table {table} needs a {claim!r} claim in the token", id)
            conditions.append(Condition(column, "eq", str(value)))
        typed, problems = bind_types(Filter(tuple(conditions)), info.types, "where_claims",
                                     table=str(table))
        if problems:  # a claim value the column's type cannot hold: nothing matches it
            raise ProtocolError(f"the token's claims do not fit table {table}", id)
        return typed

    def from_query(self, index: int, text: str, claims: Mapping[str, Any]) -> Subscription:
        """A ``query=`` parameter: ``<ops or *>:<table>[:<column>.<op>.<value>,…]``."""
        id = f"q{index}"
        try:
            q = parse_compact(text)
        except ValueError as exc:
            raise ProtocolError(f"query {index}: {exc}", id) from None
        return self.subscription(id, q.table, sorted(q.operations), None, None, claims,
                                 compact_filter=q.filter)


def parse_message(data: str | bytes, max_bytes: int) -> dict[str, Any]:
    """A client's JSON message, checked strictly: size, JSON, type, known fields."""
    if len(data) > max_bytes:
        raise ProtocolError(f"message too large ({len(data)} bytes; at most {max_bytes})")
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("expected a JSON object")
    kind = msg.get("type")
    if kind not in _FIELDS:
        raise ProtocolError(f"unknown type {kind!r} (expected subscribe, unsubscribe or auth)")
    required, optional = _FIELDS[kind]
    id = msg.get("id") if isinstance(msg.get("id"), str) else None
    unknown = sorted(set(msg) - required - optional)
    if unknown:
        raise ProtocolError(f"unknown field {unknown[0]!r} in {kind}", id)
    missing = sorted(required - set(msg))
    if missing:
        raise ProtocolError(f"{kind} needs {missing[0]!r}", id)
    if "id" in required and (not isinstance(msg["id"], str) or not msg["id"]
                             or len(msg["id"]) > MAX_ID):
        raise ProtocolError(f"id: expected a string of 1 to {MAX_ID} characters")
    if kind == "subscribe" and not isinstance(msg["table"], str):
        raise ProtocolError("table: expected a string", id)
    if kind == "auth" and not isinstance(msg["token"], str):
        raise ProtocolError("token: expected a string")
    return msg


def dumps(message: Mapping[str, Any]) -> str:
    """Exact numbers (Decimal) go out as JSON numbers, as the event JSON has them."""
    return orjson.dumps(message, default=_number).decode()


def _number(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"not JSON: {type(value).__name__}")
