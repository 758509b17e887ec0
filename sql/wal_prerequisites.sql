-- What the wal source needs from the server and the installing role.
SELECT pg_catalog.current_setting('wal_level') AS wal_level,
       pg_catalog.current_setting('server_version_num')::int AS version,
       (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles
        WHERE rolname = current_user) AS replication;
