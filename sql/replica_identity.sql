-- Updates and deletes carry the whole old row (and so the changed columns).
ALTER TABLE {table} REPLICA IDENTITY FULL;
