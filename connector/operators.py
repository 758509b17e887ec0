"""Operators: derived tables kept up to date by SQL (or a Python function) on every change.

An operator is an :class:`OperatorSink`, a *transactional* sink: the pipeline hands it a
batch's messages together with the batch's writer (connector/pipeline.py), and its SQL runs
on that transaction - the trigger reader's claim transaction, which commits with the batch's
acknowledgement, or the wal reader's own, which also records the operator's applied position
(so a restart skips what was applied). Either way its effect happens exactly once.

Per batch the sink makes a :func:`plan` (pure): for each change, the keys to run for - the new
row's key column, the old row's too when it differs, the old row's for a delete - and, with
``coalesce`` (the default), each key once, after its last change in the batch. A delete of a
``delete_with`` table deletes the key's row of the target instead; a truncate rebuilds the
whole target (``on_truncate``). It then runs the plan behind one savepoint per operator; if
anything fails, it rolls back to it and runs the plan again unit by unit (keys linked by a
change), each behind a savepoint of its own, so only the failing changes fail: the engine
retries them, parks them behind the operator's later changes, and dead-letters them under
``operator:<name>`` past its ``retry`` limits. Other sinks go on meanwhile.

``pgconnector operators rebuild`` (:func:`rebuild`) recomputes a whole target in chunks while
the daemon streams: each chunk takes the operator's advisory lock exclusively, the daemon
takes it shared for each batch, so the two never write one key from stale reads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import asyncpg
import orjson

from connector.handlers import ChangeEvent, scrub
from connector.publishers.base import Publisher
from connector.vocabulary import (
    Config,
    ConnectionLost,
    Executor,
    Message,
    OperatorConfig,
    PartialFailure,
    RetryableError,
    Route,
    TableName,
    parse_template,
)

__all__ = ["OperatorBinding", "OperatorSink", "Step", "converter", "loops", "operator_routes",
           "plan", "with_operators"]

CHANNEL = parse_template("{schema}.{table}")  # an operator's messages: one channel per table
SAVEPOINT = "pgconnector_operator"
UNIT_SAVEPOINT = "pgconnector_operator_unit"

# ---------------------------------------------------------------------------- config side


def operator_routes(op: OperatorConfig, first_index: int) -> list[Route]:
    """The routes feeding an operator's sink: one per table, whole events (the sink reads
    the key columns itself). A truncate is routed only when it rebuilds."""
    ops = op.operations | ({"truncate"} if op.on_truncate == "rebuild" else set())
    return [Route(first_index + i, table, frozenset(ops), op.sink, CHANNEL,
                  path=f"{op.path}.tables")
            for i, table in enumerate(sorted(op.tables, key=str))]


def with_operators(config: Config) -> Config:
    """``config`` with the routes of its operators: what ``install`` captures for them."""
    routes = list(config.routes)
    for op in config.operators:
        routes += operator_routes(op, 1 + max([r.index for r in routes] or [-1]))
    return dataclasses.replace(config, routes=tuple(routes))


def loops(operators: Sequence[OperatorConfig],
          writes: Mapping[str, Iterable[TableName]]) -> list[str]:
    """Config problems for operators that feed themselves: an operator writing (directly or
    through other operators) one of its own tables would run for ever. ``writes``: the
    tables each operator (by name) writes."""
    feeds: dict[TableName, set[str]] = {}  # table -> the operators it triggers
    for op in operators:
        for table in op.tables:
            feeds.setdefault(table, set()).add(op.name)
    written = {name: set(tables) for name, tables in writes.items()}
    problems = []
    for op in operators:
        # Every table reachable from what op writes, through the operators they trigger.
        seen: set[TableName] = set()
        todo = list(written.get(op.name, ()))
        via: dict[TableName, list[str]] = {t: [op.name] for t in todo}
        while todo:
            table = todo.pop()
            if table in seen:
                continue
            seen.add(table)
            if table in op.tables:
                chain = " -> ".join(via[table])
                problems.append(f"{op.path}.tables: {chain} writes {table}, one of this "
                                "operator's own tables: a loop (each change would trigger "
                                "another)")
                break
            for other in sorted(feeds.get(table, ())):
                for out in written.get(other, ()):
                    if out not in via:
                        via[out] = [*via[table], other]
                    todo.append(out)
    return problems


# ---------------------------------------------------------------------------- keys

def _timestamp(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value))


# The key's JSON value (as the event carries it) as asyncpg binds $1's type, by type name.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("int2", "int4", "int8", "oid"), int),
    "numeric": lambda v: decimal.Decimal(str(v)),
    **dict.fromkeys(("float4", "float8"), float),
    **dict.fromkeys(("text", "varchar", "bpchar", "name", "citext"),
                    lambda v: v if isinstance(v, str) else str(v)),
    "uuid": lambda v: v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)),
    "date": lambda v: dt.date.fromisoformat(str(v)),
    "timestamp": _timestamp,
    "timestamptz": _timestamp,
    "bool": bool,
}
KEY_TYPES = tuple(sorted(_CONVERT))


def converter(type_name: str | None) -> Callable[[Any], Any] | None:
    """How a key value taken from an event binds to ``$1`` of type ``type_name`` (None: the
    type is not supported as a key; a Python operator's keys stay as the event has them)."""
    if type_name is None:
        return lambda v: v
    return _CONVERT.get(type_name)


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Step:
    """One thing to run: ``sql`` (the operator for ``key``), ``delete`` (the target's row of
    ``key``) or ``rebuild`` (the whole target). ``indexes``: the messages it is for."""

    action: str
    key: Any  # hashable: a JSON object or array key as its JSON text
    indexes: tuple[int, ...]
    value: Any = field(default=None, compare=False)  # the key as the event has it

    @property
    def bound(self) -> Any:
        """The key's value to convert and bind."""
        return self.key if self.value is None else self.value


# A unit: steps that succeed or fail together (keys linked by a change), with the messages
# they are for.
Unit = tuple[list[Step], frozenset[int]]


# (schema, table) -> (its key column, whether a delete there deletes the target's row)
Columns = dict[tuple[str, str], tuple[str, bool]]


def _columns(op: OperatorConfig) -> Columns:
    """Looked up per change: made once per batch (not a TableName per change)."""
    return {(t.schema, t.name): (c, t in op.delete_with) for t, c in op.tables.items()}


def _keys(columns: Columns, event: Any) -> list[tuple[str, Any]]:
    """``(action, key value)`` pairs one change asks for, in order: the old row's key first
    (a comment moving from post 1 to post 2 recounts both)."""
    found = columns.get((event.schema, event.table))
    if found is None:
        return []
    column, deletes = found
    data = event.data
    new, old = data.get("new"), data.get("old")
    new_key = new.get(column) if isinstance(new, dict) else None
    old_key = old.get(column) if isinstance(old, dict) else None
    if isinstance(new_key, float) or isinstance(old_key, float):
        # a numeric key: exact (a float would bind a neighbouring value)
        data = event.exact
        new, old = data.get("new"), data.get("old")
        new_key = new.get(column) if isinstance(new, dict) else None
        old_key = old.get(column) if isinstance(old, dict) else None
    out: list[tuple[str, Any]] = []
    if event.op == "delete":
        if old_key is not None:
            out.append(("delete" if deletes else "sql", old_key))
    elif event.op in ("insert", "update"):
        if event.op == "update" and old_key is not None and old_key != new_key:
            # the row left the old key: for a delete_with table, that key's row goes
            out.append(("delete" if deletes else "sql", old_key))
        if new_key is not None:
            out.append(("sql", new_key))
    return out


def plan(op: OperatorConfig, messages: Sequence[Message]) -> list[Unit]:
    """What to run for ``messages`` (all of one operator, in source order), as units in
    order. Pure. With ``coalesce``, each key runs once, after its last change (a key whose
    changes include a delete_with delete has its target row deleted first); without, every
    change runs for its keys in turn."""
    start = 0
    units: list[Unit] = []
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].event.op == "truncate":
            # A rebuild recomputes every key from the tables as they are: the changes
            # before it are part of it.
            units.append(([Step("rebuild", None, tuple(range(i + 1)))],
                          frozenset(range(i + 1))))
            start = i + 1
            break
    columns = _columns(op)
    if op.coalesce:
        return units + _coalesced(columns, messages, start)
    for i in range(start, len(messages)):
        steps = [Step(action, _hashable(key), (i,), key)
                 for action, key in _keys(columns, messages[i].event)]
        if steps:
            units.append((steps, frozenset({i})))
    return units


def _coalesced(columns: Columns, messages: Sequence[Message], start: int) -> list[Unit]:
    last: dict[Any, int] = {}  # key -> index of its last change
    values: dict[Any, Any] = {}  # key -> its value as the event has it
    final: dict[Any, str] = {}  # key -> the action its last change asked for
    deleted: set[Any] = set()
    contributors: dict[Any, list[int]] = {}
    parent: dict[Any, Any] = {}  # union-find over keys linked by one change

    def find(k: Any) -> Any:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for i in range(start, len(messages)):
        pairs = _keys(columns, messages[i].event)
        first = None
        for action, raw in pairs:
            key = _hashable(raw)
            values[key] = raw
            last[key] = i
            final[key] = action
            if action == "delete":
                deleted.add(key)
            contributors.setdefault(key, []).append(i)
            parent.setdefault(key, key)
            if first is None:
                first = key
            else:
                parent[find(key)] = find(first)
    grouped: dict[Any, list[Step]] = {}
    for key in sorted(last, key=last.__getitem__):
        indexes = tuple(dict.fromkeys(contributors[key]))
        steps = grouped.setdefault(find(key), [])
        if key in deleted:
            steps.append(Step("delete", key, indexes, values[key]))
        if final[key] == "sql":
            steps.append(Step("sql", key, indexes, values[key]))
    return [(steps, frozenset(i for s in steps for i in s.indexes))
            for steps in grouped.values() if steps]


def _hashable(value: Any) -> Any:
    """Key values compare as the event has them; a composite (a JSON object or array) is
    made hashable by its JSON text."""
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value


# ---------------------------------------------------------------------------- the sink


ApplyKeys = Callable[[Executor, list[Any]], Awaitable[None]]


@dataclass(frozen=True)
class OperatorBinding:
    """What the database check found (connector/store/operators.py): ``key_type``, the type
    ``$1`` binds as (None for a Python operator: keys stay as the event has them), and the
    statements the sink runs besides its own."""

    key_type: str | None
    lock_sql: str  # the operator's advisory lock, shared, until the transaction ends
    lock_arg: str  # which lock: "<schema>/<name>"
    delete_sql: str | None = None  # deletes the target's row of $1 (delete_with)
    delete_type: str | None = None  # the type of that $1
    # recomputes the whole target on a transaction (a truncate), given how to run keys
    rebuild: Callable[[Executor, ApplyKeys], Awaitable[None]] | None = None


PythonOperator = Callable[[Executor, Any, list[ChangeEvent]], Awaitable[Any]]


class OperatorSink(Publisher):
    """Applies one operator's changes on the batch's transaction (``publish_in``); a drain
    of its parked changes calls it on a transaction of the drain's own, which also settles
    them, so what is applied there happens once too."""

    type_name: ClassVar[str] = "operator"
    options_schema: ClassVar[dict[str, Any] | None] = {"type": "object"}
    transactional: ClassVar[bool] = True

    def __init__(self, config: OperatorConfig, binding: OperatorBinding) -> None:
        super().__init__(config.sink, {})
        self.config = config
        self.binding = binding
        self.ordering = "none"  # one call at a time on the transaction: order is kept
        convert, convert_delete = converter(binding.key_type), converter(binding.delete_type)
        if convert is None or convert_delete is None:
            raise ValueError(f"{config.path}: no key conversion for {binding.key_type}")
        self.convert, self.convert_delete = convert, convert_delete
        self.function: PythonOperator | None = config.function

    async def publish(self, messages: Sequence[Message]) -> None:
        raise RetryableError("an operator applies changes inside a transaction only")

    async def publish_in(self, tx: Executor, messages: Sequence[Message]) -> None:
        units = plan(self.config, messages)
        if not units:
            return
        await tx.execute(self.binding.lock_sql, self.binding.lock_arg)
        # Every unit's steps in the batch's order (by each step's last change), so that
        # consecutive keys go out as one executemany.
        steps = sorted((s for unit, _ in units for s in unit), key=lambda s: s.indexes[-1])
        await tx.execute(f"SAVEPOINT {SAVEPOINT}")
        try:
            await self._run(tx, steps, messages)
        except Exception as exc:
            _reraise_connection_errors(exc)
            await tx.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        else:
            await tx.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
            return
        await self._isolate(tx, units, messages)

    async def _isolate(self, tx: Executor, units: list[Unit],
                       messages: Sequence[Message]) -> None:
        """Something failed: run unit by unit, each behind a savepoint, so only what fails
        fails. A unit sharing a key with one that failed fails with it (it must not
        overtake it)."""
        failures: dict[int, RetryableError] = {}
        failed_keys: set[Any] = set()
        rebuild_failed = False  # a rebuild concerns every key
        for steps, indexes in units:
            keys = {s.key for s in steps if s.action != "rebuild"}
            rebuilds = any(s.action == "rebuild" for s in steps)
            error: RetryableError | None = None
            if rebuild_failed or keys & failed_keys or (rebuilds and failures):
                error = RetryableError("an earlier change of the same key failed")
            else:
                await tx.execute(f"SAVEPOINT {UNIT_SAVEPOINT}")
                try:
                    await self._run(tx, steps, messages)
                    await tx.execute(f"RELEASE SAVEPOINT {UNIT_SAVEPOINT}")
                except Exception as exc:
                    _reraise_connection_errors(exc)
                    await tx.execute(f"ROLLBACK TO SAVEPOINT {UNIT_SAVEPOINT}")
                    error = RetryableError(describe(exc))
            if error is not None:
                failed_keys |= keys
                rebuild_failed |= rebuilds
                failures.update(dict.fromkeys(indexes, error))
        if failures:
            raise PartialFailure(failures)

    async def _run(self, tx: Executor, steps: list[Step], messages: Sequence[Message]) -> None:
        """Run ``steps`` in order; consecutive steps of one kind go as one pipelined
        ``executemany`` (one round trip for a batch's keys)."""
        i = 0
        while i < len(steps):
            action = steps[i].action
            j = i + 1
            while j < len(steps) and steps[j].action == action and action != "rebuild":
                j += 1
            run = steps[i:j]
            if action == "rebuild":
                assert self.binding.rebuild is not None
                await self.binding.rebuild(tx, self.apply_keys)
            elif action == "delete":
                assert self.binding.delete_sql is not None
                await tx.executemany(self.binding.delete_sql,
                                     [(self.convert_delete(s.bound),) for s in run], long=True)
            elif self.function is not None:
                for s in run:
                    events = [ChangeEvent.of(messages[k]) for k in s.indexes]
                    await self.function(tx, self.convert(s.bound), events)
            else:
                assert self.config.sql is not None
                await tx.executemany(self.config.sql, [(self.convert(s.bound),) for s in run],
                                     long=True)
            i = j

    async def apply_keys(self, tx: Executor, keys: list[Any]) -> None:
        """Run the operator for ``keys`` (JSON values, as events carry them): a rebuild's
        chunk."""
        if self.function is not None:
            for key in keys:
                await self.function(tx, self.convert(key), [])
        elif keys:
            assert self.config.sql is not None
            await tx.executemany(self.config.sql, [(self.convert(k),) for k in keys],
                                 long=True)


def describe(exc: BaseException) -> str:
    """A failure as its dead letter records it: the SQL error with its SQLSTATE, or the
    Python operator's exception, secrets scrubbed."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None)
        detail = getattr(exc, "detail", None)
        text = f"{type(exc).__name__}: {exc}" + (f" ({detail})" if detail else "")
        return scrub(f"SQLSTATE {state} {text}" if state else text)
    return scrub(f"{type(exc).__name__}: {exc}")


# A lost connection is no failure of the operator: the batch goes back whole.
_CONNECTION_ERRORS = (ConnectionLost, asyncpg.PostgresConnectionError,
                      asyncpg.exceptions.OperatorInterventionError, asyncpg.InterfaceError,
                      asyncpg.exceptions.InternalClientError, OSError)


def _reraise_connection_errors(exc: BaseException) -> None:
    if isinstance(exc, _CONNECTION_ERRORS):
        raise exc
