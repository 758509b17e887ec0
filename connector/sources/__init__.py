"""Sources: where change events come from (the trigger-fed outbox; logical replication later)."""
