-- Open a holdable cursor over the changes the slot has for us, read without consuming them
-- (the slot moves only in wal_advance.sql, once they are delivered). Whole transactions,
-- about $2 messages at most. $1 = slot, $3 = publication. 'messages' lets through the
-- position messages of wal_mark.sql.
DECLARE pgconnector_changes NO SCROLL CURSOR WITH HOLD FOR
SELECT lsn, data
FROM pg_catalog.pg_logical_slot_peek_binary_changes(
    $1, NULL, $2, 'proto_version', '1', 'publication_names', $3, 'messages', 'true');
