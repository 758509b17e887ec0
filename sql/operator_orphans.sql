-- The end of a rebuild: target rows whose key is in none of the delete_with tables any more
-- (their deletes happened while nothing streamed, or before a truncate). {exists} is one
-- sql/operator_orphan_clause.sql per table, joined by AND.
DELETE FROM {target} t WHERE {exists};
