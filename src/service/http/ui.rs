//! The dashboard: its assets, embedded in the binary (nothing is fetched
//! from elsewhere, so it works offline), and its login.
//!
//! Behind a token, the login form posts the token once; a good one starts
//! a session, kept in memory, whose id goes back in an HttpOnly,
//! SameSite=Strict cookie. The session has the token's role (the
//! read-only token's session reads only, enforced in the API). Actions
//! made with the cookie also need the session's CSRF token in the
//! `X-CSRF-Token` header, which only the dashboard's own pages can read
//! (`/ui/session`), and an `Origin`, when sent, of this host.

use super::auth::Role;
use super::error::ApiError;
use super::{Api, ApiState};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub(super) const COOKIE: &str = "jobvisor_session";

/// The login form's route: the one action that takes a form, not JSON.
pub(super) const LOGIN: &str = "/ui/login";

/// The login form's largest body: a token, not more.
const LOGIN_MAX: usize = 4096;

/// How long a session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most sessions kept at once (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// A logged-in browser.
#[derive(Clone, Debug)]
pub(super) struct Session {
    pub(super) role: Role,
    pub(super) csrf: String,
    expires: Instant,
}

/// The sessions of this process.
#[derive(Default)]
pub(super) struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn start(&self, role: Role) -> (String, Session) {
        let session = Session {
            role,
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        };
        let id = random_token();
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        all.retain(|_, s| s.expires > now);
        if all.len() >= MAX_SESSIONS {
            if let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                all.remove(&oldest);
            }
        }
        all.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session of `id`.
    pub(super) fn get(&self, id: &str) -> Option<Session> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    fn end(&self, id: &str) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(id);
    }
}

/// 32 random bytes from the OS, as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session id a request's cookie names, if any.
pub(super) fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether an action made with a session's cookie is the dashboard's own:
/// its CSRF header matches, and its `Origin`, if sent, is this host.
pub(super) fn same_origin_action(headers: &HeaderMap, session: &Session) -> bool {
    let csrf = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| super::auth::same(t.as_bytes(), session.csrf.as_bytes()));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_ok = host.is_some_and(|h| !super::guard::cross_origin(headers, h));
    csrf && origin_ok
}

/// Who the dashboard is talking to.
#[derive(Serialize)]
struct Whoami {
    /// Whether the API needs a token at all.
    auth: bool,
    /// `read` or `act`; absent when not logged in.
    role: Option<&'static str>,
    /// To send as `X-CSRF-Token` with actions.
    csrf: Option<String>,
}

/// `GET /ui/session`: whether a login is needed, and the session's role
/// and CSRF token.
pub(super) async fn session(State(api): ApiState, headers: HeaderMap) -> Response {
    let me = if api.auth.token.is_none() {
        Whoami {
            auth: false,
            role: Some("act"),
            csrf: None,
        }
    } else {
        match session_id(&headers).and_then(|id| api.sessions.get(id)) {
            Some(s) => Whoami {
                auth: true,
                role: Some(s.role.name()),
                csrf: Some(s.csrf),
            },
            None => Whoami {
                auth: true,
                role: None,
                csrf: None,
            },
        }
    };
    let mut r = Json(me).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /ui/login`: the form's token; a good one sets the session cookie
/// and goes back to the dashboard, a bad one goes back to the form.
pub(super) async fn login(State(api): ApiState, req: axum::extract::Request) -> Response {
    let peer = super::auth::peer(&req);
    if let Some(wait) = peer.and_then(|p| api.failures.locked(p.ip())) {
        return super::auth::too_many(wait);
    }
    let body = match axum::body::to_bytes(req.into_body(), LOGIN_MAX).await {
        Ok(b) => b,
        Err(e) => return super::error::body_error(&e, LOGIN_MAX).into_response(),
    };
    let token = serde_urlencoded::from_bytes::<LoginForm>(&body)
        .map(|f| f.token)
        .unwrap_or_default();
    let back = |to: &'static str| {
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, HeaderValue::from_static(to))],
        )
    };
    let Some(role) = api.auth.role_of(&token) else {
        super::auth::record_failure(&api, peer, "a wrong token at the login form");
        // A wrong guess costs time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        return back("/?login=failed").into_response();
    };
    let (id, _) = api.sessions.start(role);
    let cookie = cookie(&api, &id, SESSION_TTL.as_secs());
    let mut r = back("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The session cookie `value` for `max_age` seconds (0: gone), `Secure`
/// when the API is served over TLS.
fn cookie(api: &Api, value: &str, max_age: u64) -> String {
    let secure = if api.tls { "; Secure" } else { "" };
    format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
}

/// `POST /ui/logout`: ends the session (with its CSRF token).
pub(super) async fn logout(State(api): ApiState, headers: HeaderMap) -> Response {
    if let Err(e) = super::guard::json_action(&axum::http::Method::POST, &headers) {
        return e.into_response();
    }
    if let Some(id) = session_id(&headers) {
        if let Some(s) = api.sessions.get(id) {
            if !same_origin_action(&headers, &s) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "an action needs the session's X-CSRF-Token",
                )
                .into_response();
            }
        }
        api.sessions.end(id);
    }
    let cookie = cookie(&api, "", 0);
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// An embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("ui/app.css"),
    },
    Asset {
        path: "/ui/icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("ui/icon.svg"),
    },
];

/// Serves the asset at `path`.
fn asset(path: &str) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.path == path) else {
        return ApiError::not_found("no such page").into_response();
    };
    let mut r = a.body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

/// The dashboard's routes (not part of the API's document).
pub(super) fn routes() -> axum::Router<std::sync::Arc<Api>> {
    use axum::routing::{get, post};
    let mut r = axum::Router::new()
        .route("/ui/session", get(session))
        .route(LOGIN, post(login))
        .route("/ui/logout", post(logout));
    for a in ASSETS {
        r = r.route(a.path, get(move || async move { asset(a.path) }));
    }
    r
}

/// Paths anyone may load: the pages and the login.
pub(super) fn public(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}
