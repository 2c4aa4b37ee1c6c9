//! Ids as people type and read them. A command takes a whole UUID, or any
//! unique prefix or suffix of at least [`MIN_DIGITS`] hex digits. A UUIDv7
//! begins with its time, so ids made in the same moment share a long
//! prefix: lists show ids by their last [`SHORT`] hex digits (more where
//! two listed ones share those), which the commands accept.

use super::{input, CliError};
use jobvisor::store::{IdTable, Reads};
use std::collections::HashSet;
use uuid::Uuid;

/// Fewest hex digits of a prefix or suffix.
pub(crate) const MIN_DIGITS: usize = 6;
/// Hex digits of an id in a list.
const SHORT: usize = 8;

/// The id of `table` that `text` names: a UUID, or a unique prefix or
/// suffix of one. `what` names the kind in errors (`execution`).
pub(crate) async fn resolve(
    store: &dyn Reads,
    table: IdTable,
    text: &str,
    what: &str,
) -> Result<Uuid, CliError> {
    if let Ok(id) = Uuid::parse_str(text) {
        return Ok(id);
    }
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() < MIN_DIGITS || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(input(format!(
            "invalid {what} id {text:?} (expected a UUID, or a unique prefix or suffix of \
             at least {MIN_DIGITS} hex digits)"
        )));
    }
    let found = store.ids_matching(table, &hex, 4).await?;
    match found.as_slice() {
        [id] => Ok(*id),
        [] => Err(input(format!("no {what} id begins or ends with {text:?}"))),
        many => {
            let list: Vec<String> = many.iter().take(3).map(Uuid::to_string).collect();
            let more = if many.len() > 3 { ", ..." } else { "" };
            Err(input(format!(
                "{what} id {text:?} is ambiguous: it matches {}{more} (give more digits)",
                list.join(", ")
            )))
        }
    }
}

/// Short forms of `ids` for a list: each one's last [`SHORT`] hex digits,
/// or as many more as make the listed ones differ.
pub(crate) struct Shortener {
    digits: usize,
}

impl Shortener {
    pub(crate) fn new<'a>(ids: impl IntoIterator<Item = &'a Uuid> + Clone) -> Self {
        let digits = (SHORT..32)
            .find(|&n| {
                let mut seen = HashSet::new();
                ids.clone().into_iter().all(|id| seen.insert(tail(id, n)))
            })
            .unwrap_or(32);
        Self { digits }
    }

    /// `id`'s short form.
    pub(crate) fn short(&self, id: &Uuid) -> String {
        tail(id, self.digits)
    }
}

fn tail(id: &Uuid, n: usize) -> String {
    let hex = id.simple().to_string();
    hex[32 - n..].to_string()
}

/// The execution `text` names: a UUID, or a unique prefix or suffix.
pub(crate) async fn execution(store: &dyn Reads, text: &str) -> Result<Uuid, CliError> {
    resolve(store, IdTable::Executions, text, "execution").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_shows_eight_digits_unless_two_share_them() {
        let a = Uuid::parse_str("01a23b71-c420-700b-8836-95eaa92fe2e9").unwrap();
        let b = Uuid::parse_str("01a23b71-c421-700b-8836-95eaa92fe2e8").unwrap();
        let c = Uuid::parse_str("01a23b71-c422-700b-8836-15eaa92fe2e9").unwrap();
        assert_eq!(Shortener::new([a, b].iter()).short(&a), "a92fe2e9");
        let s = Shortener::new([a, b, c].iter());
        assert_eq!(
            (s.short(&a), s.short(&c)),
            ("95eaa92fe2e9".into(), "15eaa92fe2e9".into())
        );
        assert_eq!(Shortener::new([a, a].iter()).short(&a).len(), 32);
    }
}
