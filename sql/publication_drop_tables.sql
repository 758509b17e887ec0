-- {tables}: every table the publication lists (SET TABLE cannot take an empty list).
ALTER PUBLICATION {publication} DROP TABLE {tables};
