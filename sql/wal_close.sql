-- Close the cursor of wal_peek.sql (its changes are read or given back).
CLOSE pgconnector_changes;
