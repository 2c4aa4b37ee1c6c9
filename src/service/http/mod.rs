//! The HTTP API served by `jobvisor serve`: REST/JSON over the same store
//! and supervisor the CLI uses, Server-Sent Events for live output,
//! `/healthz`, `/metrics` and `/openapi.json`.
//!
//! One file per resource. Each handler carries its OpenAPI operation
//! (utoipa), and the router and the document are built from the same
//! list ([`utoipa_axum::routes!`]), so neither can name a route the other
//! lacks. Requests are checked against that document before a handler
//! sees them (`validate`): what it forbids is a 400, what it allows
//! reaches the handler, and a request that fits it but asks for something
//! inconsistent (a cycle of steps, an executable run inproc) is a 422.
//!
//! Listens on 127.0.0.1 by default. Any other address needs a bearer
//! token, compared in constant time (`auth`). Request bodies are
//! bounded. Every error is JSON, `{"error":{"code":..,"message":..}}`, with
//! a stable code; database errors are logged and answered as `internal`
//! without detail.

mod access;
mod auth;
mod error;
mod executions;
mod guard;
mod handlers;
mod jobs;
mod overview;
mod queues;
mod server;
mod streams;
mod system;
mod ui;
mod validate;
mod webhooks;
mod workflows;

pub use auth::{check_listen, Auth, NeedsToken, DEFAULT_MAX_AUTH_FAILURES, MIN_TOKEN_LEN};
pub use error::{ApiError, ErrorBody};
pub use server::{serve_with, ServeOptions, Tls, TlsError, HEADER_TIMEOUT, IDLE_TIMEOUT};

use crate::supervisor::Supervisor;
use axum::body::Bytes;
use axum::extract::Query;
use axum::Router;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// How the API is served and guarded: its tokens, the host names it
/// answers to, and the limits on what clients may hold open. An [`Auth`]
/// alone converts into the defaults around it.
///
/// ```
/// use jobvisor::http::{Auth, Options};
/// let opts = Options {
///     allowed_hosts: vec!["jobs.example.com".into()],
///     ..Options::from(Auth::new(Some("a-long-enough-token".into()), None))
/// };
/// assert_eq!(opts.max_streams, 256);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    /// The tokens.
    pub auth: Auth,
    /// Host names (`name` for any port, or `name:port`) that requests may
    /// give in `Host` besides the address served on and the loopback
    /// names: what a reverse proxy or DNS names it by.
    pub allowed_hosts: Vec<String>,
    /// The address served on, for the `Host` check (its port, and its IP
    /// as a name). [`crate::service::Service`] sets it once bound; an
    /// application that mounts [`router`] in its own server may leave it
    /// `None`, and the loopback names are then taken with any port.
    pub listen: Option<SocketAddr>,
    /// TLS: [`crate::service::Service`] serves HTTPS with it, and the
    /// session cookie is `Secure`. An application serving [`router`] itself
    /// over TLS sets it for the cookie.
    pub tls: Option<Tls>,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Server-Sent Event streams open at once; more get 503 with
    /// `Retry-After`.
    pub max_streams: usize,
    /// Failed authentications from one address within a minute after
    /// which it gets 429 for a minute (0: never).
    pub max_auth_failures: u32,
}

/// The default of [`Options::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The default of [`Options::max_streams`].
pub const DEFAULT_MAX_STREAMS: usize = 256;

impl Default for Options {
    fn default() -> Self {
        Options {
            auth: Auth::none(),
            allowed_hosts: Vec::new(),
            listen: None,
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams: DEFAULT_MAX_STREAMS,
            max_auth_failures: DEFAULT_MAX_AUTH_FAILURES,
        }
    }
}

impl From<Auth> for Options {
    fn from(auth: Auth) -> Self {
        Options {
            auth,
            ..Options::default()
        }
    }
}

/// Checks an `allowed_hosts` entry: a host name or address, with a port
/// or without.
///
/// ```
/// assert!(jobvisor::http::check_allowed_host("jobs.example.com:8443").is_ok());
/// assert!(jobvisor::http::check_allowed_host("http://jobs.example.com").is_err());
/// ```
pub fn check_allowed_host(host: &str) -> Result<(), String> {
    guard::Hosts::parse_entry(host)
        .map(|_| ())
        .ok_or_else(|| format!("allowed host {host:?}: give a host name or address, with an optional :port (no scheme or path)"))
}

/// What every handler shares.
struct Api {
    sup: Supervisor,
    auth: Auth,
    /// The names a request's `Host` may give.
    hosts: guard::Hosts,
    /// Whether the session cookie is `Secure`.
    tls: bool,
    /// Failed authentications by address.
    failures: auth::Failures,
    /// Permits of open event streams.
    streams: Arc<tokio::sync::Semaphore>,
    /// The OpenAPI document, as served.
    doc: Value,
    /// The dashboard's logins.
    sessions: ui::Sessions,
}

type ApiState = axum::extract::State<Arc<Api>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "jobvisor",
        description = "Run jobs as in-process tasks or isolated worker processes; everything they do is relayed into SQLite or PostgreSQL.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorBody, streams::Ready, streams::StateEvent, crate::model::LogEntry, crate::model::ProgressState, crate::contract::TagList, crate::contract::MetaPair, crate::contract::TimeZone, crate::contract::CronText)),
    tags(
        (name = "system", description = "Health, metrics and this document"),
        (name = "handlers", description = "What can run"),
        (name = "jobs", description = "Scheduled jobs"),
        (name = "executions", description = "Runs, their logs and their streams"),
        (name = "queues", description = "Queues and their limits"),
        (name = "workflows", description = "Graphs of steps"),
        (name = "webhooks", description = "Where events are posted"),
    )
)]
struct ApiDoc;

/// Every route, each with its operation.
fn routes() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::healthz))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi))
        .routes(routes!(system::stats))
        .routes(routes!(handlers::list))
        .routes(routes!(handlers::show))
        .routes(routes!(jobs::list, jobs::create))
        .routes(routes!(jobs::show, jobs::replace, jobs::remove))
        .routes(routes!(jobs::preview))
        .routes(routes!(jobs::trigger))
        .routes(routes!(jobs::pause))
        .routes(routes!(jobs::resume))
        .routes(routes!(jobs::next))
        .routes(routes!(overview::nodes))
        .routes(routes!(overview::change_node))
        .routes(routes!(overview::timeline))
        .routes(routes!(overview::attention))
        .routes(routes!(executions::list, executions::enqueue))
        .routes(routes!(executions::enqueue_batch))
        .routes(routes!(executions::show))
        .routes(routes!(executions::cancel))
        .routes(routes!(executions::retry))
        .routes(routes!(executions::hold))
        .routes(routes!(executions::release))
        .routes(routes!(executions::cancel_matching))
        .routes(routes!(executions::retry_matching))
        .routes(routes!(executions::logs))
        .routes(routes!(streams::execution))
        .routes(routes!(streams::events))
        .routes(routes!(queues::list))
        .routes(routes!(queues::put))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(workflows::list, workflows::run))
        .routes(routes!(workflows::show))
        .routes(routes!(workflows::cancel))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::show, webhooks::replace, webhooks::remove))
}

/// The OpenAPI 3.1 document of the API, with the security `auth` really
/// applies (none without a token).
///
/// ```
/// use jobvisor::http::{openapi_document, Auth};
/// let doc = openapi_document(&Auth::new(Some("secret".into()), None));
/// assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
/// assert!(doc["paths"]["/v1/executions"].is_object());
/// ```
pub fn openapi_document(auth: &Auth) -> Value {
    let (_, doc) = routes().split_for_parts();
    finish(doc, auth)
}

fn finish(doc: utoipa::openapi::OpenApi, auth: &Auth) -> Value {
    let mut doc = serde_json::to_value(doc).expect("the document serializes");
    validate::bound_integers(&mut doc);
    streams::declare(&mut doc);
    executions::declare(&mut doc);
    crate::contract::declare(&mut doc);
    jobs::declare(&mut doc);
    error::declare(&mut doc);
    access::declare(&mut doc, auth);
    doc
}

/// The router over `sup`, guarded as `auth` says.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use jobvisor::http::{router, Auth};
/// // The API under /jobs of an application's own axum router.
/// let sup = jobvisor::Supervisor::builder().database("jobs.db").build().await?;
/// let api = router(sup.clone(), Auth::new(Some("secret".into()), None));
/// let app: axum::Router = axum::Router::new().nest_service("/jobs", api);
/// # Ok(()) }
/// ```
pub fn router(sup: Supervisor, opts: impl Into<Options>) -> Router {
    let opts = opts.into();
    let (routes, doc) = routes().split_for_parts();
    let doc = finish(doc, &opts.auth);
    let checks = Arc::new(validate::Checks::new(&doc));
    let api = Arc::new(Api {
        sup,
        hosts: guard::Hosts::new(opts.listen, &opts.allowed_hosts, opts.tls.is_some()),
        tls: opts.tls.is_some(),
        auth: opts.auth,
        failures: auth::Failures::new(opts.max_auth_failures),
        streams: Arc::new(tokio::sync::Semaphore::new(opts.max_streams)),
        doc,
        sessions: ui::Sessions::default(),
    });
    routes
        .merge(ui::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(
            checks,
            validate::check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            access::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Serves `app` on `listener` until `shutdown`, with the default limits
/// ([`serve_with`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store().as_ref();
/// use jobvisor::http::{router, serve, Auth};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// // Serves until the shutdown future completes (here, at once).
/// serve(listener, router(sup, Auth::none()), async {}).await?;
/// # Ok(()) }
/// ```
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, ServeOptions::default(), shutdown).await
}

/// Reads `data` as each JSON body and (after a `?`) each query string the
/// API takes, with the checks their handlers make: for fuzzing, where
/// nothing may panic.
#[doc(hidden)]
pub fn parse_inputs(data: &[u8]) {
    static CHECKS: std::sync::OnceLock<validate::Checks> = std::sync::OnceLock::new();
    let checks = CHECKS.get_or_init(|| validate::Checks::new(&openapi_document(&Auth::default())));
    let b = Bytes::copy_from_slice(data);
    checks.fuzz(&b);
    if let Ok(e) = error::body::<executions::EnqueueBody>(&b) {
        let _ = e.spec();
    }
    if let Ok(b) = error::body::<executions::BulkBody>(&b) {
        let _ = b.filter();
    }
    if let Ok(q) = error::body::<queues::QueueBody>(&b) {
        let _ = q.change();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/?{text}").parse::<axum::http::Uri>() else {
        return;
    };
    if let Ok(Query(q)) = Query::<executions::ListQuery>::try_from_uri(&uri) {
        let _ = q.filter();
    }
}
