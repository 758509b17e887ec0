DROP SCHEMA {schema};
