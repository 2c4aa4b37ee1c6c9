//! What really differs between SQLite and PostgreSQL, and nothing else: a
//! few words of SQL, the pools, how a write transaction begins, NOTIFY and
//! the advisory lock, opening, migrating and listening.
//!
//! The store itself ([`super::sql::SqlStore`]) is written once against
//! [`Dialect`]; `sqlite.rs` and `postgres.rs` implement it. The dialect also runs the queries, with concrete types, so
//! that the shared code binds and decodes values without naming sqlx's
//! per-database trait bounds (which generic code cannot state once).

use super::{Notice, StoreError};
use sqlx::error::BoxDynError;
use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Arguments, ColumnIndex, Database, Decode, Encode, MySql, Pool, Postgres, Sqlite, Type};
use std::fmt::Write as _;
use std::future::Future;
use tokio::sync::mpsc::UnboundedReceiver;

/// A value every backend can bind. It is `Clone`: a backend with only
/// positional placeholders (MySQL) binds a value once for each place its
/// `$N` is written.
pub trait Bind<'q>:
    'q
    + Send
    + Sync
    + Clone
    + Encode<'q, Sqlite>
    + Type<Sqlite>
    + Encode<'q, Postgres>
    + Type<Postgres>
    + Encode<'q, MySql>
    + Type<MySql>
{
}
impl<'q, T> Bind<'q> for T where
    T: 'q
        + Send
        + Sync
        + Clone
        + Encode<'q, Sqlite>
        + Type<Sqlite>
        + Encode<'q, Postgres>
        + Type<Postgres>
        + Encode<'q, MySql>
        + Type<MySql>
{
}

/// A column type every backend can decode.
pub trait Col:
    for<'r> Decode<'r, Sqlite>
    + Type<Sqlite>
    + for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + for<'r> Decode<'r, MySql>
    + Type<MySql>
{
}
impl<T> Col for T where
    T: for<'r> Decode<'r, Sqlite>
        + Type<Sqlite>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + for<'r> Decode<'r, MySql>
        + Type<MySql>
{
}

/// A column by name or position, on any backend.
pub trait Idx: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> + ColumnIndex<MySqlRow> + Copy {}
impl<T: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> + ColumnIndex<MySqlRow> + Copy> Idx for T {}

pub(super) type Args<'q, D> = <<D as Dialect>::Db as Database>::Arguments<'q>;
pub(super) type Conn<D> = <<D as Dialect>::Db as Database>::Connection;
pub(super) type DbRow<D> = <<D as Dialect>::Db as Database>::Row;
type Result<T> = std::result::Result<T, sqlx::Error>;

/// One backend's differences.
pub trait Dialect: Send + Sync + Sized + 'static {
    /// The sqlx database.
    type Db: Database;
    /// The smaller of two values (`MIN` in SQLite, `LEAST` in PostgreSQL).
    const LEAST: &'static str;
    /// Opens and closes an expression that packs values into one JSON
    /// array, as text. A row that comes back with many columns costs a
    /// copy and an allocation per column (sqlx's SQLite rows): what a
    /// statement returns for hundreds of rows at once comes packed.
    const JSON_ARRAY: (&'static str, &'static str);
    /// The larger of two values (`MAX` in SQLite, `GREATEST` in PostgreSQL).
    const GREATEST: &'static str;
    /// A UUID column as 32 upper-case hex digits, no hyphens (`{}` is the
    /// column).
    const UUID_HEX: &'static str;
    /// Where a text first holds another, from 1, or 0 (`instr` in SQLite,
    /// `strpos` in PostgreSQL; both take the haystack first).
    const POSITION: &'static str;
    /// Locks the rows a claim selects, so that concurrent claimers on other
    /// nodes skip them (SQLite has one writer and needs nothing).
    const SKIP_LOCKED: &'static str;
    /// Locks a row read before it is updated in the same transaction.
    const FOR_UPDATE: &'static str;
    /// How a write transaction begins: SQLite takes the write lock at once,
    /// so that it never has to upgrade a read lock and fail with BUSY.
    const BEGIN: &'static str;
    /// The claim's start stamp, from the claimer's time `$1`: never before
    /// the statement runs. On PostgreSQL a statement sent by a node cut off
    /// from the database can arrive seconds after the node took its time,
    /// after its rows' parents ended on other nodes; the server's clock when
    /// the statement arrives (`statement_timestamp()`, one stamp for every
    /// row) bounds it. SQLite runs the statement in process, on the
    /// one writer the claimer stamps after acquiring.
    const START_STAMP: &'static str;
    /// A statement that serializes limited claims across nodes, for the
    /// length of a transaction. Limits are counts over running rows: nodes
    /// claiming at once would each see the same free slots.
    const CLAIM_LOCK: Option<&'static str>;
    /// A statement that lets one node at a time turn recorded changes into
    /// webhook deliveries, for the length of a transaction: each delivery
    /// is chained after the last one about its subject, which a node
    /// delivering at the same time could not see yet.
    const DELIVER_LOCK: Option<&'static str>;
    /// A statement that lets one transaction at a time change webhooks
    /// (they remake the triggers from every webhook they see).
    const WEBHOOKS_LOCK: Option<&'static str>;

    /// The statements that make the triggers on `executions` record, in
    /// `event_outbox`, an insert of a run of any handler but `webhook` in
    /// one of `inserted` (a quoted SQL list), and a change of status to
    /// one of `updated`; `None`: no such trigger.
    fn record_triggers(inserted: Option<&str>, updated: Option<&str>) -> Vec<String>;

    /// Statements run on an application's connection before and after
    /// the store's own statements in its transaction: MySQL's store needs
    /// its session's SQL mode (see `mysql.rs`), and gives the application
    /// its own back.
    const APP_SESSION: Option<(&'static str, &'static str)> = None;

    /// A condition that `column` holds `text`: what is written before the
    /// placeholder of the value bound, that value, and what is written
    /// after (by [`Dialect::POSITION`]).
    fn contains(column: &str, text: &str) -> (String, String, &'static str) {
        (
            format!("{}({column}, ", Self::POSITION),
            text.to_string(),
            ") > 0",
        )
    }

    /// `executions` as a list of pending rows newest first reads it (see
    /// `pending_by_queue`): on MySQL, with a hint to walk the pending rows'
    /// index, since its planner, asked for few rows in id order, walks the
    /// primary key instead (2.4 s over a million rows with none of a
    /// queue's pending).
    const PENDING_BY_ID: &'static str = "executions";

    /// The pool for reads.
    fn reader(&self) -> &Pool<Self::Db>;
    /// The pool for writes.
    fn writer(&self) -> &Pool<Self::Db>;
    /// The pool of in-process handlers' transactions.
    fn handlers(&self) -> &Pool<Self::Db>;
    /// Brings the schema up to date.
    fn migrate(&self) -> impl Future<Output = std::result::Result<(), StoreError>> + Send;
    /// Wake-ups from other nodes, if the backend has them.
    fn listen(&self) -> impl Future<Output = Result<Option<UnboundedReceiver<Notice>>>> + Send {
        std::future::ready(Ok(None))
    }
    /// Whether [`Dialect::publish_events`] reaches other nodes.
    const PUBLISHES_EVENTS: bool = false;
    /// Sends a batch of lifecycle events (JSON) to every node that hears
    /// them.
    fn publish_events(&self, payload: &str) -> impl Future<Output = Result<()>> + Send {
        let _ = payload;
        std::future::ready(Ok(()))
    }
    /// Whether any session hears lifecycle events now.
    fn events_heard(&self) -> impl Future<Output = Result<bool>> + Send {
        std::future::ready(Ok(false))
    }
    /// Other nodes' lifecycle events (JSON batches), if the backend carries
    /// them; ends when the receiver is dropped.
    fn listen_events(
        &self,
    ) -> impl Future<Output = Result<Option<UnboundedReceiver<String>>>> + Send {
        std::future::ready(Ok(None))
    }
    /// Tells every listening node `what` happened, on commit.
    fn notify(
        conn: &mut Conn<Self>,
        what: &'static str,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (conn, what);
        std::future::ready(Ok(()))
    }

    /// How an `INSERT` begins and ends whose rows may be there already (by
    /// any unique key): those are left as they are, and not counted as
    /// inserted (`INSERT ... ON CONFLICT DO NOTHING`; MySQL's `INSERT
    /// IGNORE`, since its no-op `ON DUPLICATE KEY UPDATE` counts the rows it
    /// leaves as found).
    const OR_NOTHING: (&'static str, &'static str) = ("INSERT", " ON CONFLICT DO NOTHING");

    /// Begins the assignments of an upsert on a conflict over `target`
    /// (`ON CONFLICT (target) DO UPDATE SET`; MySQL's `ON DUPLICATE KEY
    /// UPDATE` names no target).
    fn upsert(target: &str) -> String {
        format!(" ON CONFLICT ({target}) DO UPDATE SET ")
    }

    /// Ends an `INSERT` whose row, if one is there already by `target`, is
    /// updated by `assignments` (column, value) only where `when` holds of
    /// it (`ON CONFLICT (target) DO UPDATE SET ... WHERE when`). MySQL has
    /// no such condition: each assignment there is `IF(when, value,
    /// column)`, and since it assigns from left to right, `when` must read
    /// no column but the last assigned.
    fn upsert_when(target: &str, assignments: &[(&str, &str)], when: &str) -> String {
        let set: Vec<String> = assignments
            .iter()
            .map(|(c, v)| format!("{c} = {v}"))
            .collect();
        format!("{}{} WHERE {when}", Self::upsert(target), set.join(", "))
    }

    /// In an upsert's assignments: the value the insert gave `column`.
    fn excluded(column: &str) -> String {
        format!("excluded.{column}")
    }

    /// Whether the backend numbers its placeholders (`$N`: SQLite and
    /// PostgreSQL). MySQL's are positional (`?`): a statement written with
    /// `$N` is rewritten there, each value bound once per place it is used.
    const NUMBERED: bool = true;

    /// Runs a statement for its rows where placeholders are positional:
    /// `text` has `$N`s, and `values[N - 1]` binds each. The dialect may
    /// run it as other statements that do the same (MySQL's have no
    /// `RETURNING`, say).
    fn fetch_numbered<'c, 'q: 'c>(
        conn: &'c mut Conn<Self>,
        text: &'c str,
        values: &'c [Deferred<'q, Self>],
    ) -> impl Future<Output = Result<Vec<DbRow<Self>>>> + Send + 'c {
        let _ = (conn, text, values);
        std::future::ready(Err(sqlx::Error::Protocol(
            "this backend numbers its placeholders".into(),
        )))
    }

    /// Runs a statement for the number of rows it changed where
    /// placeholders are positional (see [`Dialect::fetch_numbered`]).
    fn execute_numbered<'c, 'q: 'c>(
        conn: &'c mut Conn<Self>,
        text: &'c str,
        values: &'c [Deferred<'q, Self>],
    ) -> impl Future<Output = Result<u64>> + Send + 'c {
        let _ = (conn, text, values);
        std::future::ready(Err(sqlx::Error::Protocol(
            "this backend numbers its placeholders".into(),
        )))
    }

    /// Adds a bind value.
    fn add<'q>(
        args: &mut Args<'q, Self>,
        value: impl Bind<'q>,
    ) -> std::result::Result<(), BoxDynError>;
    /// Whether `executions` is partitioned into live and ended rows
    /// (PostgreSQL): its unique indexes are then per partition, and what
    /// must be unique across both is looked for before an insert.
    const PARTITIONED: bool = false;
    /// Whether `Sql::columns` binds each column of a batch as one array
    /// (PostgreSQL's `unnest`). The statement's text is then the same
    /// whatever the batch's size, so the server prepares and plans it once
    /// per connection, not once per batch: an end of 200 rows took 19-27
    /// µs a row so, against 31-56 as a `VALUES` list. SQLite has no arrays,
    /// and binds a `VALUES` list.
    const ARRAYS: bool = false;
    /// Adds a column of a batch as one array bind (only where
    /// [`Dialect::ARRAYS`]).
    fn add_array(
        args: &mut Args<'_, Self>,
        column: Column,
    ) -> std::result::Result<(), BoxDynError> {
        let _ = (args, column);
        Err("this backend binds no arrays".into())
    }
    /// Runs a query for its rows.
    fn fetch_all<'c, 'q: 'c, 's: 'c>(
        conn: &'c mut Conn<Self>,
        sql: &'s str,
        args: Args<'q, Self>,
    ) -> impl Future<Output = Result<Vec<DbRow<Self>>>> + Send + 'c;
    /// Runs a query for the number of rows it changed.
    fn execute<'c, 'q: 'c, 's: 'c>(
        conn: &'c mut Conn<Self>,
        sql: &'s str,
        args: Args<'q, Self>,
    ) -> impl Future<Output = Result<u64>> + Send + 'c;
    /// Decodes one column.
    fn get<T: Col>(row: &DbRow<Self>, column: impl Idx) -> Result<T>;
}

/// The query primitives of [`Dialect`], the same text for both backends
/// but compiled against each one's concrete types.
macro_rules! queries {
    ($conn:ty, $row:ty) => {
        fn add<'q>(
            args: &mut Args<'q, Self>,
            value: impl Bind<'q>,
        ) -> std::result::Result<(), BoxDynError> {
            args.add(value)
        }

        fn fetch_all<'c, 'q: 'c, 's: 'c>(
            conn: &'c mut $conn,
            sql: &'s str,
            args: Args<'q, Self>,
        ) -> impl Future<Output = Result<Vec<$row>>> + Send + 'c {
            sqlx::query_with(sql, args).fetch_all(conn)
        }

        fn execute<'c, 'q: 'c, 's: 'c>(
            conn: &'c mut $conn,
            sql: &'s str,
            args: Args<'q, Self>,
        ) -> impl Future<Output = Result<u64>> + Send + 'c {
            async move {
                Ok(sqlx::query_with(sql, args)
                    .execute(conn)
                    .await?
                    .rows_affected())
            }
        }
    };
}

pub(super) use queries;

/// A statement and its bind values, for either backend. A statement is
/// written one of two ways, never both: with literal `$N` placeholders
/// bound in order by [`Sql::bind`] (sqlx's SQLite driver numbers `$N` as
/// PostgreSQL does), or built with [`Sql::push_bind`] alone, which writes
/// each backend's own placeholder. The built kind is for statements with
/// many binds: SQLite finds a named placeholder by a linear search, so
/// thousands of `$N` would cost quadratic time, where `?` costs nothing.
pub(super) struct Sql<'q, D: Dialect> {
    text: std::borrow::Cow<'q, str>,
    args: Args<'q, D>,
    /// Where the backend's placeholders are positional: the value of each
    /// `$N`, bound once the text is read (see [`Dialect::NUMBERED`]).
    numbered: Vec<Deferred<'q, D>>,
    error: Option<BoxDynError>,
}

/// Binds one `$N`'s value, as many times as it is called.
pub(super) type Deferred<'q, D> =
    Box<dyn Fn(&mut Args<'q, D>) -> std::result::Result<(), BoxDynError> + Send + Sync + 'q>;

/// A statement ready to run: see [`Sql::finish`].
type Finished<'q, D> = (std::borrow::Cow<'q, str>, Args<'q, D>, Vec<Deferred<'q, D>>);

/// `text` with each `$N` outside quotes turned into `?`, and `args` with
/// `values[N - 1]` bound for each, in the order they are written: how a
/// statement written for numbered placeholders runs where they are
/// positional.
pub(super) fn positional<'q, D: Dialect>(
    text: &str,
    values: &[Deferred<'q, D>],
    args: &mut Args<'q, D>,
) -> std::result::Result<String, BoxDynError> {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' || b == b'`' => quote = Some(b),
            None if b == b'$'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !(i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) =>
            {
                let end = (i + 1..bytes.len())
                    .find(|&j| !bytes[j].is_ascii_digit())
                    .unwrap_or(bytes.len());
                let n: usize = text[i + 1..end].parse()?;
                let bind = n
                    .checked_sub(1)
                    .and_then(|k| values.get(k))
                    .ok_or_else(|| format!("no value bound for ${n}"))?;
                bind(args)?;
                out.push('?');
                i = end;
                continue;
            }
            None => {}
        }
        // Multi-byte characters are copied whole: only ASCII is looked at.
        let len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + len]);
        i += len;
    }
    Ok(out)
}

impl<'q, D: Dialect> Sql<'q, D> {
    pub fn new(text: impl Into<std::borrow::Cow<'q, str>>) -> Self {
        Self {
            text: text.into(),
            args: Default::default(),
            numbered: Vec::new(),
            error: None,
        }
    }

    /// Binds the value of the next `$N` written in the text.
    pub fn bind(mut self, value: impl Bind<'q>) -> Self {
        if D::NUMBERED {
            self.add(value);
        } else {
            self.bind_deferred(value);
        }
        self
    }

    /// The statement's text, arguments and values bound by number (only
    /// where placeholders are positional), or the error met binding.
    fn finish(self) -> std::result::Result<Finished<'q, D>, sqlx::Error> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok((self.text, self.args, self.numbered)),
        }
    }

    fn add(&mut self, value: impl Bind<'q>) {
        if let Err(e) = D::add(&mut self.args, value) {
            self.error.get_or_insert(e);
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.to_mut().push_str(text);
        self
    }

    /// Writes a placeholder and binds its value. Where placeholders are
    /// positional, it writes the next `$N`, bound when the statement runs.
    pub fn push_bind(&mut self, value: impl Bind<'q>) -> &mut Self {
        if !D::NUMBERED {
            self.bind_deferred(value);
            let n = self.numbered.len();
            let _ = write!(self.text.to_mut(), "${n}");
            return self;
        }
        self.add(value);
        let _ = self.args.format_placeholder(self.text.to_mut());
        self
    }

    fn bind_deferred(&mut self, value: impl Bind<'q>) -> &mut Self {
        self.numbered
            .push(Box::new(move |args| D::add(args, value.clone())));
        self
    }

    /// Writes `VALUES (...), (...)`, one tuple an item, each filled by `row`.
    pub fn values<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Tuple<'_, 'q, D>, T),
    ) -> &mut Self {
        self.push("VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            self.push(if i == 0 { "(" } else { ", (" });
            row(
                &mut Tuple {
                    sql: self,
                    first: true,
                },
                item,
            );
            self.push(")");
        }
        self
    }

    /// Writes a batch given by its columns (of one length) as a row
    /// source whose columns are named `column1`, `column2`, ... as in a
    /// `VALUES` list: `SELECT * FROM unnest($1::uuid[], ...) AS v(column1,
    /// ...)` where the dialect binds arrays, else `VALUES (...), (...)`.
    /// Use it inside parentheses, as `FROM (...) AS v`.
    pub fn columns(&mut self, columns: Vec<Column>) -> &mut Self {
        if D::ARRAYS {
            self.push("SELECT * FROM unnest(");
            let n = columns.len();
            for (i, c) in columns.into_iter().enumerate() {
                let cast = c.array_type();
                if let Err(e) = D::add_array(&mut self.args, c) {
                    self.error.get_or_insert(e);
                }
                let _ = self.args.format_placeholder(self.text.to_mut());
                self.push("::").push(cast);
                self.push(if i + 1 < n { ", " } else { ")" });
            }
            let names: Vec<String> = (1..=n).map(|i| format!("column{i}")).collect();
            self.push(" AS v(").push(&names.join(", ")).push(")");
            return self;
        }
        let rows = columns.first().map_or(0, Column::len);
        let mut columns: Vec<_> = columns.into_iter().map(Cells::new).collect();
        self.values(0..rows, |t, _| {
            for c in &mut columns {
                c.bind_next(t);
            }
        })
    }

    /// Binds `items` as a comma-separated list (for `IN (...)`).
    pub fn push_list<T: Bind<'q>>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(item);
        }
        self
    }

    pub async fn fetch_all(
        self,
        conn: &mut Conn<D>,
    ) -> std::result::Result<Vec<DbRow<D>>, StoreError> {
        let (text, args, numbered) = self.finish()?;
        Ok(if D::NUMBERED {
            D::fetch_all(conn, &text, args).await?
        } else {
            D::fetch_numbered(conn, &text, &numbered).await?
        })
    }

    pub async fn fetch_optional(
        self,
        conn: &mut Conn<D>,
    ) -> std::result::Result<Option<DbRow<D>>, StoreError> {
        Ok(self.fetch_all(conn).await?.into_iter().next())
    }

    pub async fn execute(self, conn: &mut Conn<D>) -> std::result::Result<u64, StoreError> {
        let (text, args, numbered) = self.finish()?;
        Ok(if D::NUMBERED {
            D::execute(conn, &text, args).await?
        } else {
            D::execute_numbered(conn, &text, &numbered).await?
        })
    }
}

/// A column of a batch (see `Sql::columns`), one value a row.
pub enum Column {
    /// `uuid`.
    Uuid(Vec<uuid::Uuid>),
    /// `text`.
    Text(Vec<Option<String>>),
    /// `bigint`.
    Int(Vec<Option<i64>>),
}

impl Column {
    /// Its SQL type as an array.
    fn array_type(&self) -> &'static str {
        match self {
            Column::Uuid(_) => "uuid[]",
            Column::Text(_) => "text[]",
            Column::Int(_) => "bigint[]",
        }
    }

    fn len(&self) -> usize {
        match self {
            Column::Uuid(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Int(v) => v.len(),
        }
    }
}

/// One tuple of [`Sql::values`].
pub(super) struct Tuple<'a, 'q, D: Dialect> {
    sql: &'a mut Sql<'q, D>,
    first: bool,
}

impl<'q, D: Dialect> Tuple<'_, 'q, D> {
    pub fn bind(&mut self, value: impl Bind<'q>) -> &mut Self {
        if !std::mem::take(&mut self.first) {
            self.sql.push(", ");
        }
        self.sql.push_bind(value);
        self
    }
}

/// A column's values, taken one a row into a `VALUES` list.
enum Cells {
    Uuid(std::vec::IntoIter<uuid::Uuid>),
    Text(std::vec::IntoIter<Option<String>>),
    Int(std::vec::IntoIter<Option<i64>>),
}

impl Cells {
    fn new(c: Column) -> Self {
        match c {
            Column::Uuid(v) => Cells::Uuid(v.into_iter()),
            Column::Text(v) => Cells::Text(v.into_iter()),
            Column::Int(v) => Cells::Int(v.into_iter()),
        }
    }

    fn bind_next<'q, D: Dialect>(&mut self, t: &mut Tuple<'_, 'q, D>) {
        match self {
            Cells::Uuid(v) => t.bind(v.next()),
            Cells::Text(v) => t.bind(v.next().flatten()),
            Cells::Int(v) => t.bind(v.next().flatten()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::My;

    /// `$N` becomes `?`, each value bound where it is used, in the order
    /// written; quoted text is left alone.
    #[test]
    fn numbered_placeholders_become_positional_ones() {
        let values: Vec<Deferred<'static, My>> = vec![
            Box::new(|a| My::add(a, 10_i64)),
            Box::new(|a| My::add(a, "two")),
        ];
        let mut args = Args::<My>::default();
        let text = positional::<My>(
            "SELECT $2, $1 FROM t WHERE a = $1 AND b = '$1' AND \"c$2\" = $2 AND d$1 = 0",
            &values,
            &mut args,
        )
        .unwrap();
        assert_eq!(
            text,
            "SELECT ?, ? FROM t WHERE a = ? AND b = '$1' AND \"c$2\" = ? AND d$1 = 0"
        );
        assert_eq!(args.len(), 4);
        let mut args = Args::<My>::default();
        let e = positional::<My>("SELECT $3", &values, &mut args).unwrap_err();
        assert_eq!(e.to_string(), "no value bound for $3");
    }
}
