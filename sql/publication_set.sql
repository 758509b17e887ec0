ALTER PUBLICATION {publication} SET TABLE {tables};
