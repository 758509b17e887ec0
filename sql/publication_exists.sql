SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1);
