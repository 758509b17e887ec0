-- Claim the oldest outbox rows and build each event's JSON text (DESIGN.md §5) server-side, so
-- the daemon publishes bytes it never re-encodes. Runs inside the transaction that publishes
-- the batch: the DELETE commits only after delivery, so a crash re-delivers, never loses.
-- $1 = most rows, $2 = most bytes (stored size; the first row is always taken).
WITH picked AS (
    SELECT id, sum(sz) OVER (ORDER BY id) - sz AS before
    FROM (SELECT id, coalesce(pg_column_size(old_row), 0) + coalesce(pg_column_size(new_row), 0) AS sz
          FROM {schema}.outbox ORDER BY id LIMIT $1) AS head
),
claimed AS (
    DELETE FROM {schema}.outbox o
    -- = ANY(array) keeps this an index probe per id whatever the plan cache decides; a join
    -- here can turn into a scan of the whole outbox per batch when the backlog is large.
    WHERE o.id = ANY (ARRAY(SELECT id FROM picked WHERE before < $2))
    RETURNING o.id, o.txid, o.captured_at, o.relid, o.op, o.old_row, o.new_row, o.xmin AS row_xmin
),
named AS (
    SELECT c.*,
           coalesce(n.nspname, t.table_schema) AS schema_name,
           coalesce(r.relname, t.table_name) AS table_name,
           CASE c.op WHEN 'i' THEN 'insert' WHEN 'u' THEN 'update' WHEN 'd' THEN 'delete'
                     ELSE 'truncate' END AS op_name,
           to_char(coalesce(
               CASE WHEN current_setting('track_commit_timestamp') = 'on'
                    THEN pg_xact_commit_timestamp(c.row_xmin) END,
               c.captured_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS commit_time
    FROM claimed c
    LEFT JOIN pg_catalog.pg_class r ON r.oid = c.relid
    LEFT JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
    LEFT JOIN {schema}.installed_tables t ON r.oid IS NULL AND t.relid = c.relid
)
-- The JSON text is concatenated rather than json_build_object'ed: same escaping (to_json),
-- no " : " padding around the envelope's keys, and the key order of DESIGN.md §5 (the rows
-- are to_json's text, columns in table order, as the trigger stored them).
SELECT id, schema_name, table_name, op_name AS op, txid::text || '-' || id::text AS event_id,
       '{"id":"' || txid::text || '-' || id::text
       || '","op":"' || op_name
       || '","schema":' || to_json(schema_name)::text
       || ',"table":' || to_json(table_name)::text
       || ',"new":' || coalesce(new_row::text, 'null')
       || ',"old":' || coalesce(old_row::text, 'null')
       || CASE WHEN op = 'u' THEN ',"changes":' || coalesce((
              SELECT jsonb_object_agg(nw.key, jsonb_build_object('old', od.value, 'new', nw.value))
              FROM jsonb_each(new_row::jsonb) nw LEFT JOIN jsonb_each(old_row::jsonb) od
                   ON od.key = nw.key
              WHERE od.value IS DISTINCT FROM nw.value), '{}'::jsonb)::text
          ELSE '' END
       || ',"txid":' || txid::text
       || ',"commit_time":"' || commit_time || '"}' AS payload
FROM named
ORDER BY id;
