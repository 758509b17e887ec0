-- No table captured yet (handlers may be attached later): a publication of nothing.
CREATE PUBLICATION {publication}
WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true);
