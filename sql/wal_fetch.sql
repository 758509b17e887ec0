-- One batch of messages from the cursor of wal_peek.sql; {count} is capture.batch_size.
FETCH FORWARD {count} FROM pgconnector_changes;
