SELECT value FROM {schema}.meta WHERE key = $1;
