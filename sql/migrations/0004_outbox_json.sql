-- Migration 0004: outbox rows as json, not jsonb: to_json(NEW) is text the claim hands out as
-- it is, where jsonb would be converted to a tree on write and back to text at every claim
-- (bench/RESULTS.md). Rows already there keep their content (jsonb's text of the same JSON).
ALTER TABLE {schema}.outbox
    ALTER COLUMN old_row TYPE json USING old_row::json,
    ALTER COLUMN new_row TYPE json USING new_row::json;
