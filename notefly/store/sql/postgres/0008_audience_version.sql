-- SQLite's 0008 counts the changes to fan-out audiences, so that a page planned
-- outside its single write lock can be checked before it is written. PostgreSQL plans
-- each page inside its transaction, under row locks, and needs no such count; this
-- migration keeps the two backends' schema versions in step.
SELECT 1;
