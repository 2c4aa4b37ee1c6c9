//! The API's server loop: hyper's HTTP/1.1 connections over TCP, or TLS
//! (rustls), with what a public listener needs and `axum::serve` lacks:
//!
//! - at most [`super::Options::max_connections`] connections at once; the
//!   next waits in the kernel's listen backlog until one closes;
//! - a header-read timeout: a connection must send a whole request head
//!   within [`HEADER_TIMEOUT`] of its first byte (or of its opening, or of
//!   its TLS handshake's start), so slow-loris connections are closed;
//! - an idle timeout: a kept-alive connection with no request for
//!   [`IDLE_TIMEOUT`] is closed. A request in progress (an event stream
//!   included) is never cut by either;
//! - the peer's address on each request (`ConnectInfo`), for the
//!   failed-authentication throttle and its log.
//!
//! hyper's own `header_read_timeout` also starts whenever a kept-alive
//! connection waits for its next request, which would cut idle
//! connections at the header timeout; so both clocks are kept here, one
//! per connection, from what the connection reads and which of its
//! requests are still being answered.

use axum::extract::ConnectInfo;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

/// How long a request head may take, from its first byte (or the
/// connection's opening).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request's body may take to arrive, from its head: a body
/// sent a byte at a time would otherwise hold its connection (and the
/// handler reading it) for ever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A body that did not arrive within [`BODY_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
pub(super) struct BodyTimedOut;

impl BodyTimedOut {
    /// Whether `e`, or what caused it, is a body that timed out.
    pub(super) fn caused(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cause = Some(e);
        while let Some(c) = cause {
            if c.is::<BodyTimedOut>() {
                return true;
            }
            cause = c.source();
        }
        false
    }
}

/// A request body that fails with [`BodyTimedOut`] once its time is up.
struct Deadline {
    inner: Incoming,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Deadline {
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A certificate chain and its key, ready to accept TLS connections.
///
/// ```no_run
/// let tls = jobvisor::http::Tls::from_pem_files("/etc/jobvisor/cert.pem".as_ref(), "/etc/jobvisor/key.pem".as_ref())?;
/// # Ok::<(), jobvisor::http::TlsError>(())
/// ```
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the kind wanted.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match, say).
    #[error("the TLS certificate and key cannot be used together")]
    Config(#[source] rustls::Error),
}

impl Tls {
    /// Reads a PEM certificate chain (the server's first) and a PEM
    /// private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let file_error = |p: &Path, reason: String| TlsError::File {
            path: p.display().to_string(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_error(cert, format!("cannot read a PEM certificate: {e}")))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(cert, format!("not a PEM certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(file_error(cert, "holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| file_error(key, format!("no usable PEM private key: {e}")))?;
        // ring builds with a C compiler alone (aws-lc-rs needs cmake); its
        // provider lacks only the post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// How [`serve_with`] serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Connections at once.
    pub max_connections: usize,
    /// TLS, or plain HTTP.
    pub tls: Option<Tls>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: super::DEFAULT_MAX_CONNECTIONS,
            tls: None,
        }
    }
}

/// Serves `app` on `listener` until `shutdown`; then stops accepting,
/// lets each connection finish what it is answering, and returns once all
/// have closed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// use jobvisor::http::{router, serve_with, Auth, ServeOptions};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let opts = ServeOptions { max_connections: 64, tls: None };
/// serve_with(listener, router(sup, Auth::none()), opts, async {}).await?;
/// # Ok(()) }
/// ```
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: wait a little rather than spin.
                    tracing::debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Reap the connections that have ended.
        while conns.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let (app, tls, stop) = (app.clone(), opts.tls.clone(), stop_rx.clone());
        conns.spawn(async move {
            let _permit = permit;
            let clock = Clock::new();
            match tls {
                None => connection(tcp, peer, app, clock, stop).await,
                Some(tls) => {
                    let handshake = tls.acceptor.accept(tcp);
                    match tokio::time::timeout(HEADER_TIMEOUT, handshake).await {
                        Ok(Ok(stream)) => connection(stream, peer, app, clock, stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// What one connection is doing, for its two timeouts.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Waiting for a request head, since then.
    Head(Instant),
    /// Answering requests.
    Busy,
    /// Kept alive with nothing asked, since then.
    Idle(Instant),
}

/// A connection's clock: its phase, and how many of its requests are
/// still being answered.
struct Clock {
    phase: Mutex<Phase>,
    in_flight: AtomicUsize,
    changed: Notify,
}

impl Clock {
    fn new() -> Arc<Clock> {
        Arc::new(Clock {
            phase: Mutex::new(Phase::Head(Instant::now())),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    fn set(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn read(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.set(Phase::Busy);
        InFlight(self.clone())
    }

    /// When the connection is to be closed, or `None` while it answers.
    fn deadline(&self) -> Option<Instant> {
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Head(t) => Some(t + HEADER_TIMEOUT),
            Phase::Idle(t) => Some(t + IDLE_TIMEOUT),
            Phase::Busy => None,
        }
    }

    /// Completes when the connection has overstayed its phase.
    async fn expired(&self) {
        loop {
            let changed = self.changed.notified();
            match self.deadline() {
                Some(d) if d <= Instant::now() => return,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A request being answered; its response body holds it until sent.
struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.set(Phase::Idle(Instant::now()));
        }
    }
}

/// An I/O stream that tells its clock when bytes arrive.
struct Watched<T> {
    inner: T,
    clock: Arc<Clock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves one connection until it closes, overstays a timeout, or (at
/// shutdown) has answered what it was answering.
async fn connection<T>(
    io: T,
    peer: SocketAddr,
    app: Router,
    clock: Arc<Clock>,
    mut stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Watched {
        inner: io,
        clock: clock.clone(),
    });
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let flight = clock.begin();
            let mut req = req.map(|inner| {
                use hyper::body::Body as _;
                if inner.is_end_stream() {
                    return axum::body::Body::new(inner);
                }
                axum::body::Body::new(Deadline {
                    inner,
                    timer: Box::pin(tokio::time::sleep(BODY_TIMEOUT)),
                })
            });
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move {
                let r = tower_service::Service::call(&mut app, req).await;
                r.map(|resp| {
                    resp.map(|body| {
                        axum::body::Body::new(body.map_frame(move |f| {
                            let _held = &flight;
                            f
                        }))
                    })
                })
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(100)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = clock.expired() => {
            tracing::debug!(peer = %peer, "HTTP connection closed: a timeout passed");
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
