-- The per-installation key of the consumer lock.
SELECT hashtext('pgconnector:' || $1) AS key;
