//! An axum application that embeds the supervisor: a route enqueues a typed
//! job, another reads how it went, and a hook reports failures. The jobs run
//! in this process (inproc), recorded in SQLite.
//!
//! ```sh
//! cargo run --example axum_app -- 127.0.0.1:3000
//! curl -X POST localhost:3000/signups -H 'content-type: application/json' -d '{"email": "ada@example.com"}'
//! curl localhost:3000/signups/ID
//! ```
//!
//! The database is `$JOBVISOR_DATABASE`, else `axum_app.db`. It prints
//! `listening on ADDR` once it serves, and stops cleanly on SIGTERM or
//! Ctrl-C: the server drains, then the supervisor.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use jobvisor::events::EventKind;
use jobvisor::{Context, HandlerError, RunSpec, Supervisor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

/// The job's arguments: what the route enqueues and the handler decodes.
#[derive(Serialize, Deserialize)]
struct WelcomeEmail {
    email: String,
}

/// The job's output.
#[derive(Serialize)]
struct Sent {
    to: String,
    attempt: u32,
}

/// The job: "sends" a welcome email. An address without `@` can never be
/// sent to, so it fails for good; anything else succeeds.
async fn welcome_email(ctx: Context, args: WelcomeEmail) -> Result<Sent, HandlerError> {
    ctx.info(format!("sending a welcome email to {}", args.email))
        .await;
    if !args.email.contains('@') {
        return Err(HandlerError::permanent(format!(
            "{:?} is not an email address",
            args.email
        )));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    Ok(Sent {
        to: args.email,
        attempt: ctx.execution().attempt,
    })
}

/// `POST /signups {"email": ...}`: 202 with the job's execution id.
async fn signup(
    State(sup): State<Supervisor>,
    Json(args): Json<WelcomeEmail>,
) -> Result<(StatusCode, Json<Value>), (StatusCode, String)> {
    let mut spec = RunSpec::with_args("welcome_email", &args).map_err(internal)?;
    spec.retries = 3;
    let id = sup.enqueue(spec).await.map_err(internal)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))))
}

/// `GET /signups/{id}`: the job's status, output and error.
async fn status(
    State(sup): State<Supervisor>,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, (StatusCode, String)> {
    match sup.store().execution(id).await.map_err(internal)? {
        Some(e) => Ok(Json(json!({
            "status": e.status,
            "output": e.output,
            "error": e.error,
        }))),
        None => Err((StatusCode::NOT_FOUND, format!("no job {id}"))),
    }
}

fn internal(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn app(sup: Supervisor) -> Router {
    Router::new()
        .route("/signups", post(signup))
        .route("/signups/{id}", get(status))
        .with_state(sup)
}

/// Completes at SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let database = std::env::var("JOBVISOR_DATABASE").unwrap_or_else(|_| "axum_app.db".into());
    let sup = Supervisor::builder()
        .database(database)
        .register("welcome_email", welcome_email)
        .on_failure(|e| {
            if let EventKind::Failed { error, .. } = &e.kind {
                eprintln!("welcome email {} failed: {error}", e.execution_id);
            }
        })
        .build()
        .await?;

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);

    // One signal stops both: the server first (no new jobs), then the
    // supervisor (running jobs finish or are interrupted, to run again).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let jobs = {
        let sup = sup.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            sup.run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        })
    };
    axum::serve(listener, app(sup))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        })
        .await?;
    jobs.await??;
    Ok(())
}
