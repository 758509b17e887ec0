"""Names the whole pipeline speaks: operations, tables, channel templates, quoted identifiers.

Pure and at the bottom of the package: everything may import this, it imports nothing of ours.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass

OPERATIONS = ("insert", "update", "delete", "truncate")
# Fields of a channel template that are not columns of the row.
BUILTIN_FIELDS = frozenset({"schema", "table", "op"})


@dataclass(frozen=True)
class TableName:
    schema: str
    name: str

    def __str__(self) -> str:
        return f"{display_ident(self.schema)}.{display_ident(self.name)}"


@dataclass(frozen=True)
class ChannelTemplate:
    """A channel template split into literal text and fields, e.g. ``users:{op}``."""

    source: str
    parts: tuple[tuple[str, str | None], ...]  # (literal, field or None)

    @functools.cached_property
    def columns(self) -> frozenset[str]:  # read per event by the router: computed once
        return frozenset(f for _, f in self.parts if f is not None and f not in BUILTIN_FIELDS)


def parse_table(text: str) -> TableName:
    """``schema.table`` or ``table``; a part may be double-quoted ("a.b", "x""y")."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise ValueError("unterminated double quote")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            part, i = "".join(buf), j + 1
        else:
            j = text.find(".", i)
            j = n if j < 0 else j
            part, i = text[i:j].strip(), j
        if not part:
            raise ValueError("empty name")
        parts.append(part)
        if i >= n:
            break
        if text[i] != ".":
            raise ValueError(f"unexpected {text[i]!r} after a quoted name")
        i += 1
    if len(parts) > 2:
        raise ValueError("expected schema.table or table")
    if any(len(p.encode()) > 63 for p in parts):
        raise ValueError("a PostgreSQL name is at most 63 bytes")
    return TableName("public", parts[0]) if len(parts) == 1 else TableName(parts[0], parts[1])


def parse_template(text: str) -> ChannelTemplate:
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in string.Formatter().parse(text):
        if name is not None and (spec or conversion):
            raise ValueError(f"field {{{name}}} may not have a format spec or conversion")
        if name is not None and not name.strip():
            raise ValueError("empty {} field")
        parts.append((literal, name))
    return ChannelTemplate(text, tuple(parts))


def display_ident(name: str) -> str:
    """A name as a user writes it: bare when it can be, else double-quoted."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_ident(name: str) -> str:
    """Always-quoted identifier, the same rule as PostgreSQL's quote_ident / format('%I')."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def qualified(table: TableName) -> str:
    return f"{quote_ident(table.schema)}.{quote_ident(table.name)}"
