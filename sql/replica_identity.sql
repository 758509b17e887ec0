-- {identity}: FULL (updates and deletes carry the whole old row), or what the table had
-- before install set FULL: DEFAULT, NOTHING or USING INDEX "name".
ALTER TABLE {table} REPLICA IDENTITY {identity};
