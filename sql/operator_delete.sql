-- delete_with: a deleted row of one of those tables deletes its key's row of the target.
DELETE FROM {target} WHERE {target_key} = $1;
