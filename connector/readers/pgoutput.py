"""Decoding PostgreSQL's logical replication protocol (the ``pgoutput`` plugin, version 1) into
the event README describes ("The event"). Pure: bytes in, events out; no I/O.

Column values arrive in their text form. The common types map to JSON here, exactly as
``to_json`` maps them (the trigger source's payloads come from ``to_json``, and both sources
must publish the same values). Every other type (arrays, composites, enums, ranges, types from
extensions) is sent back to PostgreSQL to convert, once per batch and type
(:meth:`Decoder.fallbacks`), since only it knows their rules.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from connector.vocabulary import ChangeEvent

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_I16 = struct.Struct("!h").unpack_from
_I32 = struct.Struct("!i").unpack_from
_U32 = struct.Struct("!I").unpack_from
_I64 = struct.Struct("!q").unpack_from
_BEGIN = struct.Struct("!qqI").unpack_from  # final lsn, commit time, xid
_COMMIT = struct.Struct("!xqqq").unpack_from  # flags, commit lsn, end lsn, commit time

UNCHANGED = object()  # an unchanged TOASTed value the server did not send

# Built-in type OIDs (pg_type.dat) whose text form is a JSON number, except the non-finite
# values, which to_json writes as strings.
_NUMBERS = frozenset({20, 21, 23, 26, 700, 701, 1700})
_NON_FINITE = frozenset({b"NaN", b"Infinity", b"-Infinity"})
_BOOL = 16
_JSON = frozenset({114, 3802})
_TIMESTAMPS = frozenset({1114, 1184})  # timestamp, timestamptz: ISO 8601 with a "T"
_DATE = 1082
# Built-in types to_json writes as their text form in a JSON string (with the session
# settings the wal source fixes: DateStyle ISO, IntervalStyle postgres, bytea_output hex).
_STRINGS = frozenset({
    18, 19, 25, 1042, 1043,  # "char", name, text, bpchar, varchar
    17, 142, 650, 774, 790, 829, 869, 1083, 1266, 1186, 1560, 1562, 2950, 3614, 3615, 3220,
})  # bytea xml cidr macaddr8 money macaddr inet time timetz interval bit varbit uuid
#     tsvector tsquery pg_lsn


class ProtocolError(Exception):
    """A message this decoder does not understand (a newer protocol, or a bug)."""


@dataclass(slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    columns: tuple[str, ...]
    types: tuple[int, ...]
    identity: frozenset[str]  # the replica identity's columns (all of them for FULL)
    # Columns whose values may need PostgreSQL to convert (see Decoder.fallbacks), found
    # once per relation so a batch of plain columns is not scanned value by value.
    unusual: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.unusual = tuple(i for i, oid in enumerate(self.types)
                             if oid not in _NATIVE or oid in _DATES)


@dataclass(slots=True)
class Change:
    """One decoded change, values still in their text form (``None`` for SQL NULL)."""

    lsn: int
    xid: int
    commit_time: int  # microseconds since 2000-01-01 UTC
    op: str
    relation: Relation
    new: list[Any] | None = None
    old: list[Any] | None = None
    old_is_key: bool = False  # old holds the replica identity key only
    part: int = 0  # the relation's index in a TRUNCATE of several tables
    final_lsn: int = 0  # where its transaction commits (from its BEGIN)


@dataclass
class Decoder:
    """Keeps the relations the server described: a decoding session sends each relation once,
    before its first change, and again after it changes."""

    relations: dict[int, Relation] = field(default_factory=dict)
    _xid: int = 0
    _commit_time: int = 0
    _final_lsn: int = 0

    def reset(self) -> None:
        """A new decoding session (each peek is one) describes its relations anew."""
        self.relations.clear()

    def feed(self, rows: Iterable[tuple[int, bytes]]) -> tuple[list[Change], int | None]:
        """Decode ``(lsn, message)`` rows; return the changes and the end position of the last
        transaction that committed among them (None: none did)."""
        changes: list[Change] = []
        committed: int | None = None
        for lsn, data in rows:
            kind = data[0]
            if kind == 0x42:  # B
                self._final_lsn, self._commit_time, self._xid = _BEGIN(data, 1)
            elif kind == 0x43:  # C
                committed = _COMMIT(data, 1)[1]
            elif kind == 0x49:  # I
                rel = self._relation(data)
                new, _ = _tuple(data, 6)
                changes.append(Change(lsn, self._xid, self._commit_time, "insert", rel, new,
                                      final_lsn=self._final_lsn))
            elif kind == 0x55:  # U
                rel = self._relation(data)
                old, old_is_key, at = None, False, 5
                if data[at] in (0x4B, 0x4F):  # K, O
                    old_is_key = data[at] == 0x4B
                    old, at = _tuple(data, at + 1)
                new, _ = _tuple(data, at + 1)  # after N
                changes.append(Change(lsn, self._xid, self._commit_time, "update", rel, new,
                                      old, old_is_key, final_lsn=self._final_lsn))
            elif kind == 0x44:  # D
                rel = self._relation(data)
                old, _ = _tuple(data, 6)
                changes.append(Change(lsn, self._xid, self._commit_time, "delete", rel, None,
                                      old, data[5] == 0x4B, final_lsn=self._final_lsn))
            elif kind == 0x54:  # T
                (count,) = _I32(data, 1)
                for i in range(count):
                    rel = self.relations[_U32(data, 6 + 4 * i)[0]]
                    changes.append(Change(lsn, self._xid, self._commit_time, "truncate", rel,
                                          part=i, final_lsn=self._final_lsn))
            elif kind == 0x52:  # R
                self._describe(data)
            elif kind == 0x4D:  # M: a logical message
                if not data[1] & 1:  # not transactional: everything before it was decoded
                    committed = lsn
            elif kind in (0x4F, 0x59):  # Origin, Type: nothing to do
                continue
            else:
                raise ProtocolError(f"unknown pgoutput message {chr(kind)!r} at {lsn_text(lsn)}")
        return changes, committed

    def _relation(self, data: bytes) -> Relation:
        oid = _U32(data, 1)[0]
        try:
            return self.relations[oid]
        except KeyError:
            raise ProtocolError(f"change for relation {oid} before its description") from None

    def _describe(self, data: bytes) -> None:
        oid = _U32(data, 1)[0]
        schema, at = _cstring(data, 5)
        name, at = _cstring(data, at)
        at += 1  # replica identity setting
        (ncols,) = _I16(data, at)
        at += 2
        columns, types, identity = [], [], set()
        for _ in range(ncols):
            flags = data[at]
            column, at = _cstring(data, at + 1)
            columns.append(column)
            if flags & 1:
                identity.add(column)
            types.append(_U32(data, at)[0])
            at += 8  # type oid, type modifier
        self.relations[oid] = Relation(oid, schema or "pg_catalog", name, tuple(columns),
                                       tuple(types), frozenset(identity))

    @staticmethod
    def fallbacks(changes: Iterable[Change]) -> dict[int, set[bytes]]:
        """Values of types this module does not convert, per type OID, for PostgreSQL."""
        out: dict[int, set[bytes]] = {}
        for c in changes:
            rel = c.relation
            for values in (c.new, c.old) if rel.unusual else ():
                if values is None:
                    continue
                for i in rel.unusual:
                    oid, value = rel.types[i], values[i]
                    if isinstance(value, bytes) and (
                            oid not in _NATIVE or value.endswith(b" BC")):
                        out.setdefault(oid, set()).add(value)
        return out


def _cstring(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(0, at)
    return data[at:end].decode(), end + 1


def _tuple(data: bytes, at: int) -> tuple[list[Any], int]:
    """TupleData at ``at``: the values (bytes, None for NULL, UNCHANGED) and where it ends."""
    (ncols,) = _I16(data, at)
    at += 2
    values: list[Any] = []
    for _ in range(ncols):
        kind = data[at]
        if kind == 0x74:  # t
            (size,) = _I32(data, at + 1)
            values.append(data[at + 5:at + 5 + size])
            at += 5 + size
        elif kind == 0x6E:  # n
            values.append(None)
            at += 1
        elif kind == 0x75:  # u
            values.append(UNCHANGED)
            at += 1
        else:
            raise ProtocolError(f"unknown tuple value kind {chr(kind)!r}")
    return values, at


def lsn_text(lsn: int) -> str:
    """PostgreSQL's text form of a WAL position: ``16/B374D848``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _timestamp(value: bytes) -> Any:
    text = value.replace(b" ", b"T", 1)
    if text[-3:-2] in (b"+", b"-"):  # an offset of whole hours: "+05" is "+05:00" in ISO 8601
        text += b":00"
    return text.decode()


@functools.lru_cache(maxsize=64)
def _commit_time(microseconds: int) -> str:
    """The same for every change of a transaction: computed once."""
    return (_PG_EPOCH + timedelta(microseconds=microseconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _number(value: bytes) -> Any:
    return value.decode() if value in _NON_FINITE else orjson.Fragment(value)


_CONVERT: dict[int, Callable[[bytes], Any]] = {
    **{oid: _number for oid in _NUMBERS},
    _BOOL: lambda v: v == b"t",
    **{oid: orjson.Fragment for oid in _JSON},
    **{oid: _timestamp for oid in _TIMESTAMPS},
    **{oid: bytes.decode for oid in (*_STRINGS, _DATE)},
}
_NATIVE = frozenset(_CONVERT)
_DATES = frozenset({*_TIMESTAMPS, _DATE})  # BC dates go to PostgreSQL


def row(relation: Relation, values: list[Any], resolved: Mapping[tuple[int, bytes], bytes],
        fill: list[Any] | None = None) -> dict[str, Any]:
    """The row as to_json would write it. An unchanged TOASTed value is taken from ``fill``
    (the old row) when that has it, and left out otherwise."""
    out: dict[str, Any] = {}
    for i, (name, oid, value) in enumerate(zip(relation.columns, relation.types, values,
                                               strict=True)):
        if value is UNCHANGED:
            value = fill[i] if fill is not None else UNCHANGED
            if value is UNCHANGED:
                continue
        if value is None:
            out[name] = None
        elif resolved and (oid, value) in resolved:
            out[name] = orjson.Fragment(resolved[(oid, value)])
        else:
            out[name] = _CONVERT[oid](value)
    return out


def event(change: Change, resolved: Mapping[tuple[int, bytes], bytes],
          key: tuple[str, ...] = ()) -> ChangeEvent:
    """The change as the event README describes, with its JSON text."""
    rel = change.relation
    new = old = None
    changes: dict[str, Any] | None = None
    if change.old is not None:
        old = row(rel, change.old, resolved)
        if change.old_is_key:  # the identity's columns only; the others are not known
            old = {k: v for k, v in old.items() if k in rel.identity}
    if change.new is not None:
        new = row(rel, change.new, resolved, None if change.old_is_key else change.old)
        if change.op == "update" and change.old is not None and not change.old_is_key:
            changes = {}
            for i, name in enumerate(rel.columns):
                before, after = change.old[i], change.new[i]
                if after is not UNCHANGED and before != after and name in new:
                    changes[name] = {"old": old.get(name) if old else None, "new": new[name]}
    suffix = f".{change.part}" if change.part else ""
    event_id = f"{change.xid}-{change.lsn}{suffix}"
    data: dict[str, Any] = {"id": event_id, "op": change.op, "schema": rel.schema,
                            "table": rel.name, "new": new, "old": old}
    if changes is not None:
        data["changes"] = changes
    data["txid"] = change.xid
    data["commit_time"] = _commit_time(change.commit_time)
    data["lsn"] = lsn_text(change.lsn)
    return ChangeEvent(change.lsn, rel.schema, rel.name, change.op, orjson.dumps(data), key,
                       event_id, change.final_lsn)
