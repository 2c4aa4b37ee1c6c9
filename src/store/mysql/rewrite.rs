//! How a statement written once for the three backends reads on MySQL.
//!
//! The store writes each statement once, in the SQL that SQLite and
//! PostgreSQL share. MySQL spells a few things otherwise, and lacks two
//! that the store leans on; this module says how each is done instead:
//! - a sum of integers, which MySQL makes a `DECIMAL`, is cast back to
//!   an integer ([`integer_sums`]);
//! - a few words ([`WORDS`]): `CAST(x AS SIGNED)` for `BIGINT` and `CHAR`
//!   for `TEXT`, `DOUBLE` for `DOUBLE PRECISION`, `<=>` for
//!   `IS NOT DISTINCT FROM`, and a plain CTE where PostgreSQL is told to
//!   materialize one (MySQL decides for itself);
//! - a `VALUES` list as a row source (`FROM (VALUES (...), (...)) AS v`,
//!   whose columns are `column1`, `column2`, ...): MariaDB names such
//!   columns after the first row's values, and MySQL wants `ROW(...)`, so
//!   it becomes `SELECT ... AS column1, ... UNION ALL SELECT ...`;
//! - `UPDATE t SET ... FROM (rows) AS v WHERE ...`: MySQL joins instead,
//!   `UPDATE t JOIN (rows) AS v ON ... SET ...`;
//! - `UPDATE ... RETURNING` (see [`Update`]): neither MySQL nor MariaDB
//!   has it, so the rows are picked and locked by a `SELECT ... FOR
//!   UPDATE`, updated by key, and read back by key, in one transaction.
//!
//! One difference is the store's to keep, not this module's: MySQL assigns
//! an `UPDATE`'s columns from left to right, each assignment reading the
//! ones before it, where SQL's reads the row as it was. No assignment the
//! store writes reads a column assigned before it.
//!
//! Only the statements' top level is looked at, outside quotes and
//! parentheses, and only the shapes the store writes are known: anything
//! else runs as written.

use std::borrow::Cow;

/// PostgreSQL's words, and MySQL's for the same thing.
pub(super) const WORDS: [(&str, &str); 5] = [
    (" AS MATERIALIZED (", " AS ("),
    (" AS BIGINT)", " AS SIGNED)"),
    (" AS TEXT)", " AS CHAR)"),
    (" AS DOUBLE PRECISION)", " AS DOUBLE)"),
    (" IS NOT DISTINCT FROM ", " <=> "),
];

/// Where `kw` first starts in `s` at the top level (outside quotes and
/// parentheses), from byte `from` on.
pub(super) fn find_top(s: &str, kw: &str, from: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let (mut depth, mut quote) = (0usize, None::<u8>);
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if depth == 0 && b.is_ascii() && s[i..].starts_with(kw) => return Some(i),
            None => match b {
                b'\'' | b'"' | b'`' => quote = Some(b),
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// Where the parenthesis opened just before `open` closes (the index of
/// its `)`: the first at the top level from there).
fn closing(s: &str, open: usize) -> Option<usize> {
    find_top(s, ")", open)
}

/// Splits `s` at its top-level commas.
fn items(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = find_top(s, ",", start) {
        out.push(s[start..i].trim());
        start = i + 1;
    }
    out.push(s[start..].trim());
    out
}

/// `text` in MySQL's words, its `VALUES` row sources made `SELECT`s.
pub(super) fn translate(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for (pg, my) in WORDS {
        if out.contains(pg) {
            out = Cow::Owned(out.replace(pg, my));
        }
    }
    if out.contains("SUM(") {
        out = Cow::Owned(integer_sums(&out));
    }
    const SOURCE: &str = "FROM (VALUES ";
    if !out.contains(SOURCE) {
        return out;
    }
    let s = out.as_ref();
    let mut done = String::with_capacity(s.len() + s.len() / 4);
    let mut at = 0;
    while let Some(found) = s[at..].find(SOURCE) {
        let start = at + found + SOURCE.len();
        let Some(end) = closing(s, start) else {
            break;
        };
        done.push_str(&s[at..start - "VALUES ".len()]);
        done.push_str(&rows_as_selects(&s[start..end]));
        at = end;
    }
    done.push_str(&s[at..]);
    Cow::Owned(done)
}

/// `s` with each `SUM(x)` made `CAST(SUM(x) AS SIGNED)`: MySQL sums
/// integers as `DECIMAL`, where PostgreSQL's sum of `integer`s is a
/// `bigint` and SQLite's an integer. Every sum the store takes is of
/// integers.
fn integer_sums(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 32);
    let mut at = 0;
    while let Some(found) = s[at..].find("SUM(") {
        let start = at + found;
        let open = start + "SUM(".len();
        let word = s[..start]
            .bytes()
            .next_back()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        match closing(s, open) {
            Some(close) if !word => {
                out.push_str(&s[at..start]);
                out.push_str("CAST(SUM(");
                out.push_str(&integer_sums(&s[open..close]));
                out.push_str(") AS SIGNED)");
                at = close + 1;
            }
            _ => {
                out.push_str(&s[at..open]);
                at = open;
            }
        }
    }
    out.push_str(&s[at..]);
    out
}

/// `(a, b), (c, d)` as `SELECT a AS column1, b AS column2 UNION ALL SELECT
/// c, d`.
fn rows_as_selects(tuples: &str) -> String {
    let mut out = String::with_capacity(tuples.len() * 2);
    for (r, tuple) in items(tuples).into_iter().enumerate() {
        let inner = tuple
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(tuple);
        out.push_str(if r == 0 {
            "SELECT "
        } else {
            " UNION ALL SELECT "
        });
        for (c, value) in items(inner).into_iter().enumerate() {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(value);
            if r == 0 {
                out.push_str(" AS column");
                out.push_str(&(c + 1).to_string());
            }
        }
    }
    out
}

/// An `UPDATE` as the store writes it: `[WITH ctes] UPDATE table SET set
/// [FROM (source) AS v] WHERE filter [RETURNING returning]`.
#[derive(Debug, PartialEq)]
pub(super) struct Update<'t> {
    pub with: Option<&'t str>,
    pub table: &'t str,
    pub set: &'t str,
    /// A row source named `v`, without its parentheses.
    pub source: Option<&'t str>,
    pub filter: &'t str,
    pub returning: Option<&'t str>,
}

/// With a `WITH`, the statement updates the rows a CTE named `picked`
/// picked: this ends its filter, and the rows are picked by reading the
/// CTE first.
pub(super) const PICKED: &str = " AND id IN (SELECT id FROM picked)";

/// How [`Update::lock_picked`] ends, after the keys' list.
pub(super) const LOCK_PICKED_END: &str = ") FOR UPDATE SKIP LOCKED";

impl<'t> Update<'t> {
    /// `text` as an `UPDATE` of the store's shape, if it is one.
    pub fn parse(text: &'t str) -> Option<Self> {
        let s = text.trim();
        let (with, s) = match s.strip_prefix("WITH ") {
            Some(rest) => {
                let at = find_top(rest, " UPDATE ", 0)?;
                (Some(&rest[..at]), &rest[at + 1..])
            }
            None => (None, s),
        };
        let s = s.strip_prefix("UPDATE ")?;
        let at = s.find(" SET ")?;
        let table = &s[..at];
        if table.contains(' ') {
            return None;
        }
        let s = &s[at + " SET ".len()..];
        let where_at = find_top(s, " WHERE ", 0)?;
        let (set, source) = match find_top(s, " FROM (", 0).filter(|&f| f < where_at) {
            Some(from) => {
                let open = from + " FROM (".len();
                let close = closing(s, open)?;
                if s[close..where_at].trim() != ") AS v" {
                    return None;
                }
                (&s[..from], Some(&s[open..close]))
            }
            None => (&s[..where_at], None),
        };
        let rest = &s[where_at + " WHERE ".len()..];
        let (filter, returning) = match find_top(rest, " RETURNING ", 0) {
            Some(r) => (&rest[..r], Some(&rest[r + " RETURNING ".len()..])),
            None => (rest, None),
        };
        if with.is_some() && (!filter.ends_with(PICKED) || source.is_some()) {
            return None;
        }
        Some(Update {
            with,
            table,
            set,
            source,
            filter,
            returning,
        })
    }

    /// The tables the statement reads: `table`, joined to its row source
    /// on the filter.
    fn from(&self) -> String {
        match self.source {
            Some(source) => format!("{} JOIN ({source}) AS v ON {}", self.table, self.filter),
            None => self.table.to_string(),
        }
    }

    /// Its filter, where the row source does not already apply it.
    fn filter(&self) -> &'t str {
        match (self.source, self.with) {
            (Some(_), _) => "TRUE",
            (None, Some(_)) => &self.filter[..self.filter.len() - PICKED.len()],
            (None, None) => self.filter,
        }
    }

    /// The update as one MySQL statement (no `RETURNING`, no `WITH`).
    pub fn joined(&self) -> String {
        format!(
            "UPDATE {} SET {} WHERE {}",
            self.from(),
            self.set,
            self.filter()
        )
    }

    /// Reads the ids of the rows that `picked` picks (with a `WITH`).
    pub fn pick(&self) -> Option<String> {
        self.with.map(|w| format!("WITH {w} SELECT id FROM picked"))
    }

    /// Locks the rows the update changes (none picked by a `WITH`),
    /// reading their keys.
    pub fn lock_all(&self, key: &str) -> String {
        format!(
            "SELECT {t}.{key} FROM {} WHERE {} FOR UPDATE",
            self.from(),
            self.filter(),
            t = self.table
        )
    }

    /// Locks those of the rows picked (with a `WITH`) that the update
    /// changes, reading their keys; the picked keys' list follows, then
    /// [`LOCK_PICKED_END`]. A row another transaction holds is skipped, as
    /// a claim on PostgreSQL skips it.
    pub fn lock_picked(&self, key: &str) -> String {
        format!(
            "SELECT {t}.{key} FROM {t} WHERE {} AND {t}.{key} IN (",
            self.filter(),
            t = self.table
        )
    }

    /// The update of the rows locked; their keys' list follows, then `)`.
    pub fn update(&self, key: &str) -> String {
        format!(
            "UPDATE {} SET {} WHERE {} AND {t}.{key} IN (",
            self.from(),
            self.set,
            self.filter(),
            t = self.table
        )
    }

    /// Reads what `RETURNING` gave of the rows updated; their keys' list
    /// follows, then `)`.
    pub fn read_back(&self, key: &str) -> String {
        format!(
            "SELECT {} FROM {t} WHERE {t}.{key} IN (",
            self.returning.unwrap_or("1"),
            t = self.table
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_row_sources_are_made_mysql() {
        assert_eq!(
            translate(
                "UPDATE t SET a = v.column2 FROM (VALUES ($1, CAST(NULL AS BIGINT)), ($2, 'x, (y)')) \
                 AS v WHERE t.id = v.column1 AND t.b IS NOT DISTINCT FROM $3"
            ),
            "UPDATE t SET a = v.column2 FROM (SELECT $1 AS column1, CAST(NULL AS SIGNED) AS column2 \
             UNION ALL SELECT $2, 'x, (y)') AS v WHERE t.id = v.column1 AND t.b <=> $3"
        );
        assert_eq!(
            translate("SELECT SUM(CASE WHEN (a) THEN 1 ELSE 0 END), CHECKSUM(b) FROM t"),
            "SELECT CAST(SUM(CASE WHEN (a) THEN 1 ELSE 0 END) AS SIGNED), CHECKSUM(b) FROM t"
        );
        // An INSERT's own VALUES list is MySQL's too.
        assert_eq!(
            translate("INSERT INTO t (a) VALUES ($1), ($2)"),
            "INSERT INTO t (a) VALUES ($1), ($2)"
        );
    }

    #[test]
    fn an_update_from_a_row_source_becomes_a_join() {
        let u = Update::parse(
            "UPDATE executions SET pid = v.column2 FROM (SELECT $1 AS column1, $2 AS column2) \
             AS v WHERE executions.id = v.column1 AND executions.status = 'running'",
        )
        .unwrap();
        assert_eq!(u.returning, None);
        assert_eq!(
            u.joined(),
            "UPDATE executions JOIN (SELECT $1 AS column1, $2 AS column2) AS v ON \
             executions.id = v.column1 AND executions.status = 'running' \
             SET pid = v.column2 WHERE TRUE"
        );
    }

    #[test]
    fn an_update_returning_is_locked_updated_and_read_back_by_key() {
        let u = Update::parse(
            "UPDATE unique_keys SET execution_id = next_id, next_id = NULL \
             WHERE \"key\" = $1 AND next_id IS NOT NULL RETURNING execution_id",
        )
        .unwrap();
        assert_eq!(u.pick(), None);
        assert_eq!(
            u.lock_all("\"key\""),
            "SELECT unique_keys.\"key\" FROM unique_keys WHERE \"key\" = $1 \
             AND next_id IS NOT NULL FOR UPDATE"
        );
        assert_eq!(
            u.update("\"key\""),
            "UPDATE unique_keys SET execution_id = next_id, next_id = NULL WHERE \"key\" = $1 \
             AND next_id IS NOT NULL AND unique_keys.\"key\" IN ("
        );
        assert_eq!(
            u.read_back("\"key\""),
            "SELECT execution_id FROM unique_keys WHERE unique_keys.\"key\" IN ("
        );
    }

    #[test]
    fn a_claim_reads_what_its_cte_picked_first() {
        let u = Update::parse(
            "WITH a AS (SELECT 1), picked AS (SELECT id FROM executions WHERE (x) LIMIT $3) \
             UPDATE executions SET status = 'running' \
             WHERE status = 'pending' AND id IN (SELECT id FROM picked) RETURNING id, queue",
        )
        .unwrap();
        assert_eq!(
            u.pick().unwrap(),
            "WITH a AS (SELECT 1), picked AS (SELECT id FROM executions WHERE (x) LIMIT $3) \
             SELECT id FROM picked"
        );
        assert_eq!(
            u.lock_picked("id"),
            "SELECT executions.id FROM executions WHERE status = 'pending' AND executions.id IN ("
        );
        assert_eq!(u.returning, Some("id, queue"));
    }

    #[test]
    fn other_statements_are_not_updates() {
        assert_eq!(Update::parse("SELECT 1"), None);
        assert_eq!(Update::parse("INSERT INTO t (a) VALUES ($1)"), None);
    }
}
