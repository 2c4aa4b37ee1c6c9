//! What a browser may not do to the API, whatever the token: the checks
//! that stop a page on another origin, and DNS rebinding, from driving a
//! service on loopback (where no token is needed). They run before the
//! token is looked at.
//!
//! - **Host.** The `Host` header must name the address the API is served
//!   on, `localhost`, `127.0.0.1` or `[::1]` (with the port it is served
//!   on), or a name in `allowed_hosts`. A rebinding page reaches loopback
//!   under its own name, so its requests carry that name: 403
//!   `host_not_allowed`.
//! - **Origin.** A request with an `Origin` that is not this server's own,
//!   or with `Sec-Fetch-Site: cross-site`, is 403 `cross_origin`.
//! - **Content type.** Every POST, PUT, PATCH and DELETE must say
//!   `Content-Type: application/json`, body or not (415 otherwise). A
//!   browser sends that type across origins only after a CORS preflight,
//!   which this server never grants, so a `no-cors` fetch or an HTML form
//!   cannot act. The dashboard's login form (`/ui/login`) is the one
//!   exception; the Origin check covers it.

use super::error::ApiError;
use super::Api;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// The names a request's `Host` may give.
#[derive(Clone, Debug, Default)]
pub(super) struct Hosts {
    /// The address served on, when known (an embedding router may not know it).
    listen: Option<SocketAddr>,
    /// Names from `allowed_hosts`, lowercase, with the port if one was
    /// given (else any port).
    allowed: Vec<(String, Option<u16>)>,
    /// Whether it is served over TLS (the port a bare host name implies).
    tls: bool,
}

impl Hosts {
    pub(super) fn new(listen: Option<SocketAddr>, allowed: &[String], tls: bool) -> Hosts {
        Hosts {
            listen,
            allowed: allowed
                .iter()
                .filter_map(|h| Self::parse_entry(h))
                .collect(),
            tls,
        }
    }

    /// An `allowed_hosts` entry as (lowercase name, port if given).
    pub(super) fn parse_entry(entry: &str) -> Option<(String, Option<u16>)> {
        let h = entry.trim().to_ascii_lowercase();
        split_host(&h).map(|(n, p)| (n.to_string(), p))
    }

    /// Whether `host` (a `Host` header's value) names this server.
    pub(super) fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        let default_port = if self.tls { 443 } else { 80 };
        if self
            .allowed
            .iter()
            .any(|(n, p)| n == name && p.is_none_or(|p| p == port.unwrap_or(default_port)))
        {
            return true;
        }
        let port_ok = match (self.listen, port) {
            (None, _) => true,
            (Some(l), Some(p)) => l.port() == p,
            (Some(l), None) => l.port() == default_port,
        };
        if !port_ok {
            return false;
        }
        if matches!(name, "localhost" | "127.0.0.1" | "[::1]") {
            return true;
        }
        self.listen.is_some_and(|l| {
            !l.ip().is_unspecified()
                && match l {
                    SocketAddr::V4(a) => name == a.ip().to_string(),
                    SocketAddr::V6(a) => name == format!("[{}]", a.ip()),
                }
        })
    }
}

/// `name` and `port` of a `Host` value (`name`, `name:port`, `[v6]:port`);
/// `None` when it is not of that shape.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    if host.is_empty() || host.contains(['/', '@', ' ', '\\']) {
        return None;
    }
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        match rest {
            "" => (name, None),
            r => (name, Some(r.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    (!name.is_empty()).then_some((name, port))
}

/// Whether `origin` (an `Origin` header) is the origin that `host` (the
/// request's `Host`) names: the same host and port, over http or https.
/// The scheme is not compared, so that a TLS-terminating proxy in front
/// does not make the dashboard's own requests cross-origin.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && authority.eq_ignore_ascii_case(host.trim())
}

/// The request's host: `Host`, or the URI's authority (HTTP/2).
fn host_of(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Whether a request is from a page of another site: an `Origin` that is
/// not `host`'s, or `Sec-Fetch-Site: cross-site`.
pub(super) fn cross_origin(headers: &HeaderMap, host: &str) -> bool {
    let foreign_origin = headers
        .get_all(header::ORIGIN)
        .iter()
        .any(|o| !o.to_str().is_ok_and(|o| same_origin(o, host)));
    let cross_site = headers
        .get_all("sec-fetch-site")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    foreign_origin || cross_site
}

/// Whether `method` changes something (and so needs the JSON type).
fn acts(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Whether the request says its body is JSON (`application/json`, any
/// parameters).
pub(super) fn says_json(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(v), None) = (types.next(), types.next()) else {
        return false;
    };
    v.to_str().is_ok_and(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
    })
}

/// The checks before routing: host, then origin.
pub(super) fn check(hosts: &Hosts, req: &Request) -> Result<(), ApiError> {
    let Some(host) = host_of(req).filter(|h| hosts.allows(h)) else {
        let shown: String = host_of(req)
            .unwrap_or("")
            .chars()
            .take(100)
            .filter(|c| !c.is_control())
            .collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!("host {shown:?} is not this server's: add it to `allowed_hosts` (serve --allowed-host) to reach the API by that name"),
        ));
    };
    if cross_origin(req.headers(), host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a request from a page of another origin is refused",
        ));
    }
    Ok(())
}

/// 415 unless an action says it sends JSON (checked once the route and
/// method are known, so that a method a route lacks is still a 405).
pub(super) fn json_action(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if acts(method) && !says_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("a {method} needs `Content-Type: application/json`, with or without a body"),
        ));
    }
    Ok(())
}

pub(super) async fn guard(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    match check(&api.hosts, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listen: &str, allowed: &[&str]) -> Hosts {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        Hosts::new(Some(listen.parse().unwrap()), &allowed, false)
    }

    #[test]
    fn the_host_must_name_this_server() {
        let h = hosts("127.0.0.1:7180", &[]);
        for ok in [
            "127.0.0.1:7180",
            "localhost:7180",
            "LOCALHOST:7180",
            "[::1]:7180",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:7180",
            "localhost:7181",
            "localhost",
            "127.0.0.2:7180",
            "",
            "localhost:7180/x",
            "user@localhost:7180",
            "[::1",
            "localhost:99999",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
    }

    #[test]
    fn allowed_hosts_add_names_with_any_port_or_one() {
        let h = hosts("0.0.0.0:7180", &["jobs.example.com", "ops.example:8443"]);
        assert!(h.allows("jobs.example.com"));
        assert!(h.allows("jobs.example.com:443"));
        assert!(h.allows("ops.example:8443"));
        assert!(!h.allows("ops.example:7180"));
        assert!(
            !h.allows("0.0.0.0:7180"),
            "the unspecified address is nobody's name"
        );
        assert!(!h.allows("evil.jobs.example.com"));
        let v6 = hosts("[::1]:80", &[]);
        assert!(v6.allows("[::1]"), "port 80 may be left out");
        let ip = hosts("192.0.2.7:7180", &[]);
        assert!(ip.allows("192.0.2.7:7180"));
    }

    #[test]
    fn an_origin_is_this_servers_only_with_the_same_host_and_port() {
        assert!(same_origin("http://localhost:7180", "localhost:7180"));
        assert!(same_origin("https://localhost:7180", "localhost:7180"));
        assert!(!same_origin("http://localhost:8000", "localhost:7180"));
        assert!(!same_origin("null", "localhost:7180"));
        assert!(!same_origin("file://localhost:7180", "localhost:7180"));
    }
}
