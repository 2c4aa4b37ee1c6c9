-- Numbering only: 0001 holds the whole schema as of 0013 on the other
-- backends, and this number keeps its place.
SELECT 1;
