//! Who may call the API: nobody needs a token on loopback without one; with
//! a token set, every route but `/healthz` (and the dashboard's pages and
//! login) needs it, as a bearer token or as the dashboard's session cookie
//! (`super::ui`), and a second, read-only token may read (GET) but not
//! act. This file holds the tokens, their roles and the lockout;
//! `super::access` applies them to each request and declares them in the
//! document.

use super::{Api, ApiError};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The API's tokens.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// Reads and acts.
    pub token: Option<String>,
    /// Reads only.
    pub readonly: Option<String>,
}

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Read,
    Act,
}

impl Role {
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Act => "act",
        }
    }
}

/// Routes anyone may call.
pub(super) const PUBLIC: [&str; 1] = ["/healthz"];

impl Auth {
    /// No tokens: loopback only.
    pub fn none() -> Self {
        Self::default()
    }

    /// `token`, and `readonly` if given (empty strings count as unset).
    pub fn new(token: Option<String>, readonly: Option<String>) -> Self {
        let set = |t: Option<String>| t.filter(|t| !t.is_empty());
        Auth {
            token: set(token),
            readonly: set(readonly),
        }
    }

    /// The role `token` gives.
    pub(super) fn role_of(&self, token: &str) -> Option<Role> {
        self.role(Some(token))
    }

    pub(super) fn role(&self, given: Option<&str>) -> Option<Role> {
        let given = given?;
        if self
            .token
            .as_deref()
            .is_some_and(|t| same(given.as_bytes(), t.as_bytes()))
        {
            return Some(Role::Act);
        }
        if self
            .readonly
            .as_deref()
            .is_some_and(|t| same(given.as_bytes(), t.as_bytes()))
        {
            return Some(Role::Read);
        }
        None
    }
}

/// Compares in time that depends only on the lengths.
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0 && a.len() == b.len()
}

pub(super) fn reads(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// Failed authentications that close an address out, by default: this
/// many...
pub const DEFAULT_MAX_AUTH_FAILURES: u32 = 10;
/// ...within this long...
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// ...get it 429 for this long.
const LOCKOUT: Duration = Duration::from_secs(60);
/// Addresses tracked at most (an address beyond is not throttled, and
/// says so in the log).
const MAX_TRACKED: usize = 100_000;

/// Recent failed authentications by peer address, and the addresses
/// closed out for failing too often.
pub(super) struct Failures {
    by_peer: Mutex<HashMap<IpAddr, Tally>>,
    /// Failures within the window that close an address out (0: never).
    limit: usize,
}

impl Default for Failures {
    fn default() -> Self {
        Failures::new(DEFAULT_MAX_AUTH_FAILURES)
    }
}

#[derive(Default)]
struct Tally {
    recent: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl Failures {
    pub(super) fn new(limit: u32) -> Failures {
        Failures {
            by_peer: Mutex::default(),
            limit: limit as usize,
        }
    }

    /// How long `ip` stays closed out, if it is.
    pub(super) fn locked(&self, ip: IpAddr) -> Option<Duration> {
        let all = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        let until = all.get(&ip)?.locked_until?;
        until.checked_duration_since(Instant::now())
    }

    /// Records a failure from `ip`; true when it closes `ip` out.
    pub(super) fn failed(&self, ip: IpAddr) -> bool {
        if self.limit == 0 {
            return false;
        }
        let now = Instant::now();
        let mut all = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() >= MAX_TRACKED && !all.contains_key(&ip) {
            all.retain(|_, t| {
                t.locked_until.is_some_and(|u| u > now)
                    || t.recent.back().is_some_and(|l| now - *l < FAILURE_WINDOW)
            });
            if all.len() >= MAX_TRACKED {
                tracing::warn!(peer = %ip, "too many addresses failing authentication to track: this one is not throttled");
                return false;
            }
        }
        let t = all.entry(ip).or_default();
        while t.recent.front().is_some_and(|f| now - *f >= FAILURE_WINDOW) {
            t.recent.pop_front();
        }
        t.recent.push_back(now);
        if t.recent.len() >= self.limit {
            t.recent.clear();
            t.locked_until = Some(now + LOCKOUT);
            return true;
        }
        false
    }
}

/// The peer's address, where the server recorded it.
pub(super) fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// 429 for an address closed out.
pub(super) fn too_many(wait: Duration) -> Response {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        "too many failed authentications from this address: try again later",
    )
    .with_header(
        header::RETRY_AFTER,
        HeaderValue::from(wait.as_secs().max(1)),
    )
    .into_response()
}

/// Logs a failed authentication from `peer` (never what was given), and
/// closes the address out after too many.
pub(super) fn record_failure(api: &Api, peer: Option<SocketAddr>, what: &str) {
    let shown = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
    tracing::warn!(peer = %shown, "authentication failed: {what}");
    if let Some(p) = peer {
        if api.failures.failed(p.ip()) {
            tracing::warn!(peer = %p.ip(), "{} failed authentications within {}s: refusing this address for {}s", api.failures.limit, FAILURE_WINDOW.as_secs(), LOCKOUT.as_secs());
        }
    }
}

/// The shortest token accepted off loopback.
pub const MIN_TOKEN_LEN: usize = 16;

/// The API on an address other machines reach, without a token or with
/// one too short to withstand guessing.
#[derive(Debug, thiserror::Error)]
pub enum NeedsToken {
    /// No token.
    #[error("listening on {0} (not loopback) needs a bearer token: set `token` in the config file or JOBVISOR_API_TOKEN")]
    Missing(SocketAddr),
    /// A token under [`MIN_TOKEN_LEN`] characters.
    #[error("listening on {addr} (not loopback) needs a token of at least {MIN_TOKEN_LEN} characters; the {which} has {len} (try `openssl rand -hex 32`)")]
    Short {
        /// The address.
        addr: SocketAddr,
        /// `token` or `read-only token`.
        which: &'static str,
        /// Its length.
        len: usize,
    },
}

/// Checks the listen address against the token rule: off loopback, a
/// token (and the read-only token, if any) of at least [`MIN_TOKEN_LEN`]
/// characters.
///
/// ```
/// use jobvisor::http::check_listen;
/// assert!(check_listen("127.0.0.1:7180".parse()?, None, None).is_ok());
/// assert!(check_listen("0.0.0.0:7180".parse()?, Some("a"), None).is_err());
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn check_listen(
    addr: SocketAddr,
    token: Option<&str>,
    readonly: Option<&str>,
) -> Result<(), NeedsToken> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(NeedsToken::Missing(addr));
    };
    for (which, t) in [("token", Some(token)), ("read-only token", readonly)] {
        let len = t.map_or(MIN_TOKEN_LEN, |t| t.chars().count());
        if len < MIN_TOKEN_LEN {
            return Err(NeedsToken::Short { addr, which, len });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
        assert!(!same(b"x", b""));
    }

    #[test]
    fn only_loopback_may_listen_without_a_token_and_a_short_one_is_no_token() {
        let any = "0.0.0.0:8080".parse().unwrap();
        let long = "0123456789abcdef";
        assert!(check_listen("127.0.0.1:8080".parse().unwrap(), None, None).is_ok());
        assert!(check_listen("[::1]:8080".parse().unwrap(), Some("a"), None).is_ok());
        assert!(check_listen(any, None, None).is_err());
        assert!(check_listen(any, Some(""), None).is_err());
        assert!(check_listen(any, Some("a"), None).is_err());
        assert!(check_listen(any, Some(&long[1..]), None).is_err());
        assert!(check_listen(any, Some(long), None).is_ok());
        assert!(check_listen(any, Some(long), Some("short")).is_err());
    }

    #[test]
    fn ten_failures_within_a_minute_close_an_address_out() {
        let f = Failures::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..DEFAULT_MAX_AUTH_FAILURES - 1 {
            assert!(!f.failed(ip));
        }
        assert!(f.locked(ip).is_none());
        assert!(f.failed(ip));
        assert!(f.locked(ip).is_some_and(|w| w <= LOCKOUT));
        assert!(f.locked("192.0.2.2".parse().unwrap()).is_none());
        let off = Failures::new(0);
        assert!((0..100).all(|_| !off.failed(ip)));
    }

    #[test]
    fn the_read_only_token_reads_and_the_token_acts() {
        let auth = Auth::new(Some("rw".into()), Some("ro".into()));
        assert_eq!(auth.role(Some("rw")), Some(Role::Act));
        assert_eq!(auth.role(Some("ro")), Some(Role::Read));
        assert_eq!(auth.role(Some("r")), None);
        assert_eq!(auth.role(None), None);
        let open = Auth::new(Some(String::new()), None);
        assert!(open.token.is_none());
    }
}
