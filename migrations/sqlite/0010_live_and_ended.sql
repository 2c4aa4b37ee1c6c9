-- Numbering only. PostgreSQL's 0010 splits `executions` into the live and
-- the ended rows; SQLite keeps one table (its one writer claims with no
-- contention to spare the hot rows from). Databases made before the numbers
-- were aligned have 0011 to 0013 recorded as 0010 to 0012: opening one
-- renumbers its history first (`Lite::migrate`).
SELECT 1;
