-- Removes the connector's own objects (triggers on user tables are dropped before this).
DROP TABLE IF EXISTS {schema}.outbox;
DROP TABLE IF EXISTS {schema}.dead_letters;
DROP TABLE IF EXISTS {schema}.parked;
DROP TABLE IF EXISTS {schema}.installed_tables;
DROP TABLE IF EXISTS {schema}.wal_lag;
DROP TABLE IF EXISTS {schema}.operators;
DROP TABLE IF EXISTS {schema}.meta;
DROP FUNCTION IF EXISTS {schema}.capture_v1();
