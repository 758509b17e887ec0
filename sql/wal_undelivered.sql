-- Changes the slot still holds for us (decodes everything it holds: for uninstall and a
-- switch of source only). $1 = slot, $2 = publication.
SELECT count(*) AS pending
FROM pg_catalog.pg_logical_slot_peek_binary_changes(
    $1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)
WHERE pg_catalog.get_byte(data, 0) = ANY ('{73,85,68,84}'::int[]);  -- I U D T
