-- {tables} is the list of captured tables, each quoted. Changes of a partition are published
-- as changes of the partitioned table a route names.
CREATE PUBLICATION {publication} FOR TABLE {tables}
WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true);
