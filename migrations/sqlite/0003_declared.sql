-- Handlers and jobs declared by the configuration file, so that a reload
-- removes what an earlier file declared and this one no longer does (and
-- never what an operator added by hand).
CREATE TABLE declared (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
