NOT EXISTS (SELECT 1 FROM {table} s WHERE s.{column} = t.{target_key})
