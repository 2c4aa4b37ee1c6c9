//! Who may call the API: nobody needs a token on loopback without one; with
//! a token set, every route but `/healthz` (and the dashboard's pages and
//! login) needs it, as a bearer token or as the dashboard's session cookie
//! ([`super::ui`]), and a second, read-only token may read (GET) but not
//! act. The document declares exactly this ([`declare`]).

use super::{Api, ApiError};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

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
const PUBLIC: [&str; 1] = ["/healthz"];

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

    fn role(&self, given: Option<&str>) -> Option<Role> {
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

fn reads(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

pub(super) async fn authorize(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if api.auth.token.is_none() || PUBLIC.contains(&path) || super::ui::public(path) {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let role =
        match bearer {
            Some(_) => api.auth.role(bearer),
            None => match super::ui::session_id(req.headers()).and_then(|id| api.sessions.get(id)) {
                Some(s) if reads(req.method()) => Some(s.role),
                Some(s) if super::ui::same_origin_action(req.headers(), &s) => Some(s.role),
                Some(_) => return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "an action with the session cookie needs its X-CSRF-Token, from this origin",
                )
                .into_response(),
                None => None,
            },
        };
    match role {
        Some(Role::Act) => next.run(req).await,
        Some(Role::Read) if reads(req.method()) => next.run(req).await,
        Some(Role::Read) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the read-only token cannot act",
        )
        .into_response(),
        None => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token (or the dashboard's session) is required",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// Writes the security that `auth` applies into `doc`: none without a
/// token; else the bearer scheme on every operation but the public ones,
/// with their 401 (and 403 on actions, where a read-only token exists).
pub(super) fn declare(doc: &mut Value, auth: &Auth) {
    if auth.token.is_none() {
        return;
    }
    let description = if auth.readonly.is_some() {
        "The API token; the read-only token (`token_readonly`) may call GET routes only"
    } else {
        "The API token"
    };
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": description},
        "session": {"type": "apiKey", "in": "cookie", "name": super::ui::COOKIE,
            "description": "The dashboard's session, from its login form; actions with it also need the session's X-CSRF-Token header"}});
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in ops {
            if PUBLIC.contains(&path.as_str()) {
                op["security"] = json!([]);
                continue;
            }
            let act = method != "get" && method != "head";
            op["security"] = json!([{"bearer": []}, {"session": []}]);
            op["responses"]["401"] = json!({"description": "No valid token",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
            if act && auth.readonly.is_some() {
                op["responses"]["403"] = json!({"description": "The read-only token cannot act",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
            }
        }
    }
}

/// The API on an address other machines reach, without a token.
#[derive(Debug, thiserror::Error)]
#[error("listening on {0} (not loopback) needs a bearer token: set `token` in the config file or JOBVISOR_API_TOKEN")]
pub struct NeedsToken(pub SocketAddr);

/// Checks the listen address against the token rule.
pub fn check_listen(addr: SocketAddr, token: Option<&str>) -> Result<(), NeedsToken> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(NeedsToken(addr));
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
    fn only_loopback_may_listen_without_a_token() {
        assert!(check_listen("127.0.0.1:8080".parse().unwrap(), None).is_ok());
        assert!(check_listen("[::1]:8080".parse().unwrap(), None).is_ok());
        assert!(check_listen("0.0.0.0:8080".parse().unwrap(), None).is_err());
        assert!(check_listen("0.0.0.0:8080".parse().unwrap(), Some("")).is_err());
        assert!(check_listen("0.0.0.0:8080".parse().unwrap(), Some("t")).is_ok());
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
