"""Row filters of routes: parsed from the config, typed by the table's columns, evaluated in
Python and compiled to SQL. Pure: no I/O.

The modules, one concern each (each imports only those below it; .importlinter checks it):

- ``compact``: the compact syntax ``col.op.value`` of a subscription (:func:`parse_compact`);
- ``sql``: :func:`to_sql` and the rendering of values as SQL literals;
- ``evaluation``: :func:`evaluate` on a row as the event carries it;
- ``bind``: :func:`bind_types`, the values converted to their columns' types;
- ``types``: the type table below and the conversion of a value to a column's type;
- ``parse``: the map form (:func:`parse_where`, :func:`columns`), the operators and ``any``.

The dataclasses :class:`Filter` and :class:`Condition` live in connector/vocabulary/filter.py.
This package re-exports the public names; code of ours imports them from their own module.

The model
---------
A :class:`Filter` is ``AND(conditions) AND (OR(any_of) if any_of else true)``; a
:class:`Condition` tests one column with one operator. In the config (a route's ``where:``)::

    where:
      status: active                 # shorthand for {eq: active}
      amount: {gte: 100, lt: 10000}  # several operators on a column: AND
      region: {in: [eu, us]}
      deleted_at: {is_null: true}
      any:                           # OR of maps, each map ANDed; may nest `any`
        - {kind: a}
        - {score: {lt: 0}, kind: b}

Operators: ``eq neq lt lte gt gte in not_in is_null``. The key ``any`` is reserved in this map
form: a column literally named ``any`` can only be filtered with the compact syntax, quoted
(``"any".eq.x``, see :func:`parse_compact`).

The life of a filter
--------------------
1. :func:`parse_where` checks the structure; values stay as written (YAML scalars).
2. :func:`bind_types` checks every column against the table and converts every value to its
   column's type (see *Types* below); a filter is only evaluated or compiled once bound.
3. :func:`evaluate` decides on a row as the event carries it: PostgreSQL's ``to_jsonb(row)``
   read with ``json.loads(text, parse_float=decimal.Decimal)``.
4. :func:`to_sql` writes the same decision as a SQL boolean expression over ``NEW``/``OLD``
   for a trigger's ``WHEN`` clause. Both always give the same answer on the same row
   (tests/integration/test_filters_sql.py checks it against a real server).

NULL semantics (as SQL)
-----------------------
Every comparison (``eq neq lt lte gt gte in not_in``) with a NULL column is *not satisfied*:
``{neq: x}`` and ``{not_in: [...]}`` do not match NULL (add ``any: [{col: {is_null: true}},
...]`` for that). ``is_null`` tests NULL. Values in a filter are never NULL (``{eq: null}`` and
``in: [a, null]`` are errors: write ``is_null``). So a filter is always exactly true or false:
in SQL each comparison is wrapped in ``coalesce(…, false)``, and ``NOT IN`` never sees a NULL.

Types (the ``types`` mapping of :func:`bind_types`, :func:`evaluate` and :func:`to_sql`)
---------------------------------------------------------------------------------------
``types`` maps each column name to its type as ``format_type(atttypid, atttypmod)`` writes it
(``integer``, ``numeric(12,2)``, ``character varying(20)``, ``timestamp(3) with time zone``,
``integer[]`` …), with two rules for the caller:

- a domain column is given as its *base* type (``format_type(typbasetype, typtypmod)``,
  resolved through domains over domains down to the first non-domain type);
- an enum column (or a domain over an enum) is given as ``enum:<type name>``, e.g.
  ``enum:mood``. Its labels are not checked: a value that is no label never matches.

Common aliases (``int4``, ``varchar``, ``timestamptz`` …) are accepted as well. What each type
allows, and how values are converted:

============================================  ==================  =========================
type                                          value               operators
============================================  ==================  =========================
smallint, integer, bigint                     int (in range)      all
numeric                                       Decimal (also NaN,  all
                                              ±Infinity)
real, double precision                        float (also NaN,    all
                                              ±Infinity)
text, character varying                       str                 all, byte order
character(n) (trailing blanks ignored)        str                 all, byte order
boolean                                       bool                eq neq in not_in is_null
enum:<name>                                   str                 eq neq in not_in is_null
uuid                                          str, canonical      all
timestamp with time zone                      aware datetime      all
timestamp without time zone                   naive datetime      all
date                                          date                all
json, jsonb, arrays, bytea, anything else     —                   is_null only
============================================  ==================  =========================

- Numbers: YAML numbers or numeric strings (``"5"``, ``"1e3"``, ``"NaN"``, ``"Infinity"``);
  never booleans. Integer columns take integral values only. ``real`` values are rounded to
  single precision as PostgreSQL does. NaN equals NaN and sorts above every number, as in
  PostgreSQL; ``-0`` equals ``0``.
- Timestamps: ISO 8601 strings (``2026-01-02T03:04:05.123456+02:00``, a space for ``T``,
  ``Z``, seconds and fraction optional, at most 6 fraction digits), YAML timestamps, or
  ``infinity`` / ``-infinity``. A ``timestamp with time zone`` value without an offset is
  taken as **UTC** (never the session's time zone); a ``timestamp without time zone`` value
  may not have one. A date alone means midnight. Years 1 to 9999.
- Text is compared in byte order (UTF-8 byte order is code-point order): the SQL adds
  ``COLLATE "C"``, whatever the column's collation. ``character(n)`` ignores trailing blanks on
  both sides, as PostgreSQL does. This assumes a UTF8 database.
- ``is_null`` on json/jsonb is also true for a JSON ``null`` value: the event renders both as
  ``null``, so the SQL tests both too.

The SQL side relies on ``to_jsonb`` writing floats exactly (PostgreSQL ≥ 12 with the default
``extra_float_digits = 1``; a writer's session that lowers it puts rounded floats into its
events, which the trigger, comparing exact values, did not see). A numeric ``Infinity`` value
needs PostgreSQL ≥ 14.
"""

from __future__ import annotations

from connector.filters.bind import bind_types
from connector.filters.compact import CompactQuery, parse_compact
from connector.filters.evaluation import evaluate
from connector.filters.parse import ANY, LIST_OPERATORS, OPERATORS, ORDERING, columns, parse_where
from connector.filters.sql import to_sql
from connector.vocabulary import Condition, Filter

__all__ = [
    "ANY",
    "LIST_OPERATORS",
    "OPERATORS",
    "ORDERING",
    "CompactQuery",
    "Condition",
    "Filter",
    "bind_types",
    "columns",
    "evaluate",
    "parse_compact",
    "parse_where",
    "to_sql",
]
