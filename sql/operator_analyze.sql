-- After a rebuild filled the target: fresh statistics, so the operator's prepared MERGE is
-- not planned for the nearly empty table it was (a sequential scan that grows with it).
ANALYZE {target};
