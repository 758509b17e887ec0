-- Tables about to join the publication ({tables}): wait for the transactions writing them
-- now and hold off new writers until this one commits. A change written before the table
-- joined is never published, even if its transaction commits after; with the lock, every
-- transaction that commits after the join also wrote after it. (CREATE TRIGGER takes the
-- same lock for the trigger source.)
LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE;
