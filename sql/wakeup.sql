-- Wake the active daemon now rather than at its next poll.
SELECT pg_catalog.pg_notify('pgconnector_wakeup', '');
