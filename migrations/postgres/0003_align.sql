-- Numbering only. PostgreSQL's 0001 holds what SQLite has as 0001 and 0002,
-- so PostgreSQL's 0002 is SQLite's 0003. From here on both backends number
-- every migration alike: the next one is 0004 on both.
SELECT 1;
