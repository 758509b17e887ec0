-- A heartbeat of the wal source: a non-transactional message written into the WAL, whose
-- arrival on the stream tells the reader everything before it was read (so the slot may move
-- up to it even while our tables are quiet and others write), and whose round trip measures
-- the end-to-end lag. Written when $2 (a periodic beat) or when the slot is more than $3 bytes
-- behind the WAL's end. The lag the previous beat measured, $4 (seconds; before the first,
-- -1), is kept in wal_lag for `pgconnector status`; that write's commit, synchronous whatever
-- the session says, flushes the message at once (a non-transactional message alone waits for
-- the WAL writer, and the stream carries only flushed WAL). $1 = slot, $5 = the prefix.
-- Returns the message's position (the end of its WAL record, as the stream reports it), or no
-- row when none was written.
WITH beat AS (
    SELECT pg_catalog.pg_logical_emit_message(false, $5, pg_catalog.now()::text)::text AS lsn
    FROM pg_catalog.pg_replication_slots
    WHERE slot_name = $1
      AND pg_catalog.set_config('synchronous_commit', 'on', true) = 'on'
      AND ($2 OR pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(),
                                            confirmed_flush_lsn) > $3)
), kept AS (
    INSERT INTO {schema}.wal_lag (slot, lag_seconds)
    SELECT $1, $4::float8 FROM beat
    ON CONFLICT (slot) DO UPDATE SET lag_seconds = EXCLUDED.lag_seconds,
                                     measured_at = EXCLUDED.measured_at
)
SELECT lsn FROM beat;
