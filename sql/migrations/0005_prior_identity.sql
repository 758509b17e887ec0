-- Migration 0005: the wal source remembers the replica identity each table had before install
-- set it FULL, and gives it back on uninstall (d, n, or i:<index>; NULL: install did not
-- change it).
ALTER TABLE {schema}.installed_tables ADD COLUMN prior_identity text;
