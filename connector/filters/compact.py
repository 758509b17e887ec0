"""The compact syntax ``<operations>:<table>[:<column>.<operator>.<value>,...]`` of a
subscription: :func:`parse_compact`, values as strings (bind them with bind_types)."""

from __future__ import annotations

from dataclasses import dataclass

from connector.filters.parse import _EXPECTED_OPERATORS, ANY, LIST_OPERATORS, OPERATORS
from connector.vocabulary import OPERATIONS, Condition, Filter, parse_table


@dataclass(frozen=True)
class CompactQuery:
    """A subscription in the compact syntax: which operations of which table, which rows."""

    operations: frozenset[str]
    table: str  # schema.table as config.TableName prints it (parse_table reads it back)
    filter: Filter | None  # values as strings: bind with bind_types before use


def parse_compact(text: str) -> CompactQuery:
    """Parse ``<operations>:<table>[:<condition>[,<condition>...]]`` (conditions ANDed).

    ::

        query      = operations ":" table [ ":" condition { "," condition } ]
        operations = "*" | operation { "|" operation }
                     operation = insert | update | delete | truncate; "*" is all four
        table      = [ name "." ] name         as in the config: "public" when no schema;
                     a name in double quotes may hold any character ("" is a quote)
        condition  = column "." operator "." value
        column     = name | quoted             a bare column name is any text without
                                               . , : ( ) " ; "any" is reserved: write "any"
        operator   = eq | neq | lt | lte | gt | gte | in | not_in | is_null
        value      = quoted | bare             bare: everything up to the next "," (may hold
                                               "." and ":"), not empty, not starting with "
                                               or (; quoted: "…" with "" for a quote
                   | "(" item { "," item } ")" for in / not_in; an item is quoted or bare
                                               (bare: anything but , ) " and not empty)
                   | true | false              for is_null

    Examples: ``insert:users:id.eq.5``, ``*:orders:amount.gte.100``,
    ``update|delete:public.users:status.in.(active,pending),deleted_at.is_null.true``,
    ``delete:users`` (no filter), ``*:users:name.eq."Smith, John"``. Values stay strings
    (``is_null`` takes a bool): :func:`bind_types` converts them. Nothing is percent-decoded
    or trimmed. ValueError, with the position, for anything else.
    """
    p = _Scanner(text)
    operations = p.operations()
    p.expect(":", "after the operations")
    table = p.table()
    if p.done():
        return CompactQuery(operations, table, None)
    p.expect(":", "after the table")
    conditions = [p.condition()]
    while not p.done():
        p.expect(",", "between conditions")
        conditions.append(p.condition())
    return CompactQuery(operations, table, Filter(tuple(conditions)))


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def done(self) -> bool:
        return self.i >= len(self.text)

    def error(self, message: str, at: int | None = None) -> ValueError:
        at = self.i if at is None else at
        return ValueError(f"{message} at position {at} of {self.text!r}")

    def expect(self, char: str, where: str) -> None:
        if self.text.startswith(char, self.i):
            self.i += 1
            return
        found = repr(self.text[self.i]) if not self.done() else "the end"
        raise self.error(f"expected {char!r} {where}, found {found}")

    def until(self, stops: str) -> str:
        start = self.i
        while not self.done() and self.text[self.i] not in stops:
            self.i += 1
        return self.text[start:self.i]

    def quoted(self) -> str:
        start = self.i
        self.i += 1  # the opening quote
        out = []
        while True:
            if self.done():
                raise self.error("unterminated double quote", start)
            ch = self.text[self.i]
            if ch == '"':
                if self.text.startswith('""', self.i):
                    out.append('"')
                    self.i += 2
                    continue
                self.i += 1
                return "".join(out)
            out.append(ch)
            self.i += 1

    def operations(self) -> frozenset[str]:
        start = self.i
        words = self.until(":").split("|")
        if words == ["*"]:
            return frozenset(OPERATIONS)
        for word in words:
            if word not in OPERATIONS:
                raise self.error(f"unknown operation {word!r} (expected "
                                 f"{', '.join(OPERATIONS)} joined by '|', or *)", start)
        return frozenset(words)

    def table(self) -> str:
        start = self.i
        while not self.done() and self.text[self.i] != ":":
            if self.text[self.i] == '"':
                self.quoted()
            else:
                self.i += 1
        try:
            return str(parse_table(self.text[start:self.i]))
        except ValueError as exc:
            raise self.error(f"invalid table: {exc}", start) from None

    def condition(self) -> Condition:
        start = self.i
        if self.text.startswith('"', self.i):
            column = self.quoted()
        else:
            column = self.until('.,:()"')
            if not column:
                raise self.error("expected a column name")
            if column == ANY:
                raise self.error("'any' is reserved: quote a column named any (\"any\")",
                                 start)
        self.expect(".", f"after the column {column!r}")
        op_at = self.i
        op = self.until(".,")
        if op not in OPERATORS:
            raise self.error(f"unknown operator {op!r} (expected {_EXPECTED_OPERATORS})",
                             op_at)
        self.expect(".", f"after the operator {op!r}")
        value_at = self.i
        if op == "is_null":
            word = self.until(",")
            if word not in ("true", "false"):
                raise self.error(f"is_null takes true or false, got {word!r}", value_at)
            return Condition(column, op, word == "true")
        if op in LIST_OPERATORS:
            if not self.text.startswith("(", self.i):
                raise self.error(f"{op} takes a list: ({op}.(a,b,c))")
            self.i += 1
            items = [self.item(")")]
            while self.text.startswith(",", self.i):
                self.i += 1
                items.append(self.item(")"))
            self.expect(")", "to close the list")
            return Condition(column, op, tuple(items))
        if self.text.startswith("(", self.i):
            raise self.error(f"{op} takes a single value; a list is for in and not_in")
        return Condition(column, op, self.item(""))

    def item(self, closer: str) -> str:
        if self.text.startswith('"', self.i):
            return self.quoted()
        start = self.i
        value = self.until("," + closer + '"')
        if not self.done() and self.text[self.i] == '"':
            raise self.error('a double quote may only start a quoted value ("…")')
        if not value:
            raise self.error('expected a value (write "" for an empty string)', start)
        return value
