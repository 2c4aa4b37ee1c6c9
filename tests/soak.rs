//! A service must always answer SIGTERM (issue 33): after idling past every
//! idle threshold the code has, and after its database went away (SQLite's
//! directory removed; PostgreSQL refusing connections, or not answering at
//! all). Each `serve` is started as systemd-less scripts start it: by a
//! shell that exits at once, stdin on /dev/null, stderr to a file, so that
//! it is reparented (to this test process, made a subreaper, so that its
//! exit status can still be read).
//!
//! `JOBVISOR_TEST_IDLE_CAP` brings every idle threshold (the code page-out,
//! pool workers', database connections' idle and lifetime timeouts, quiet
//! polls) down to a second, so that the soak is cheap.

mod common;

use common::*;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `serve` whose starting shell has exited.
struct Detached {
    pid: Pid,
    log: std::path::PathBuf,
    status: Option<WaitStatus>,
}

impl Detached {
    fn start(env: &Env, db: &str, extra: &[&str]) -> Detached {
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let log = env.path(&format!("serve-{}.log", uuid::Uuid::now_v7()));
        let mut script =
            String::from(r#""$0" --database "$1" serve --listen off --drain-timeout 2s"#);
        for (i, _) in extra.iter().enumerate() {
            script.push_str(&format!(r#" "${}""#, i + 3));
        }
        script.push_str(r#" </dev/null >/dev/null 2>"$2" & echo $!"#);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(jobvisor_bin())
            .arg(db)
            .arg(&log)
            .args(extra)
            .env("JOBVISOR_WORKER", worker_bin())
            .env("JOBVISOR_TEST_IDLE_CAP", "1s")
            .env("NO_COLOR", "1")
            .env("JOBVISOR_LOG", "info,jobvisor::engine::maintenance=debug")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let d = Detached {
            pid: Pid::from_raw(pid),
            log,
            status: None,
        };
        d.wait_log("ready");
        d
    }

    fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < DEADLINE,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit code, if it exited by now.
    fn exited(&mut self) -> Option<i32> {
        if self.status.is_none() {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
                WaitStatus::StillAlive => return None,
                s => self.status = Some(s),
            }
        }
        match self.status {
            Some(WaitStatus::Exited(_, code)) => Some(code),
            other => panic!("serve ended abnormally: {other:?}\n{}", self.log()),
        }
    }

    /// SIGTERM; then the exit code and how long the stop took.
    fn terminate(&mut self, within: Duration) -> (i32, Duration) {
        nix::sys::signal::kill(self.pid, Signal::SIGTERM).unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(code) = self.exited() {
                return (code, t0.elapsed());
            }
            assert!(
                t0.elapsed() < within,
                "serve did not stop within {within:?} of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ids of its threads named `prefix`… (as `/proc` shortens names).
    fn threads(&self, prefix: &str) -> HashSet<String> {
        let dir = format!("/proc/{}/task", self.pid);
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
            })
            .map(|t| t.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if self.status.is_none() {
            if std::thread::panicking() {
                eprintln!("--- serve log ---\n{}", self.log());
            }
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// What a stop after SIGTERM must log, first of all.
const SHUTTING_DOWN: &str = "SIGTERM: shutting down";

#[test]
fn an_idle_serve_answers_sigterm_past_every_idle_threshold() {
    let env = Env::new();
    env.pooled_builtin("noop", "2", &[]);
    let mut serve = Detached::start(&env, &env.db, &[]);
    // A pool worker and the database connections exist, then idle.
    let id = env.enqueue(&["noop"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(env.store());
    let e = rt.block_on(finished(store.as_ref(), id));
    assert_eq!(e.status, jobvisor::Status::Succeeded, "{e:?}");
    let worker = e.pid.expect("a process-mode run records its pid") as i32;
    let connections = serve.threads("sqlx-sqlite");
    assert!(
        !connections.is_empty(),
        "SQLite runs a thread per connection"
    );
    // Past each threshold several times over: the page-out (after 1 s
    // idle), the pool's idle worker (1 s), the connections' idle timeout
    // and lifetime (1 s), the quiet polls (1 s).
    std::thread::sleep(Duration::from_secs(6));
    let start = Instant::now();
    while alive(worker) {
        assert!(
            start.elapsed() < DEADLINE,
            "the idle pool worker was not retired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        serve.log().contains("idle: code pages given back"),
        "{}",
        serve.log()
    );
    let now = serve.threads("sqlx-sqlite");
    assert!(
        connections.is_disjoint(&now),
        "every database connection was replaced while idle: {connections:?} then {now:?}"
    );
    let (code, took) = serve.terminate(DEADLINE);
    eprintln!("idle past every threshold: stopped {took:?} after SIGTERM");
    assert_eq!(code, 0, "{}", serve.log());
    assert!(serve.log().contains(SHUTTING_DOWN), "{}", serve.log());
    assert!(serve.log().contains("stopped"), "{}", serve.log());
    // Nothing ran: no drain to wait out.
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn serve_stops_on_sigterm_after_its_sqlite_directory_is_removed() {
    let env = Env::new();
    let dir = env.path("data");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("jv2.db").display().to_string();
    let mut serve = Detached::start(&env, &db, &[]);
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_dir_all(&dir).unwrap();
    // Connections are replaced within a second (the idle cap), and then
    // fail: the dispatcher, the scheduler and the heartbeat say so.
    serve.wait_log("claim failed; retrying");
    serve.wait_log("node heartbeat failed");
    std::thread::sleep(Duration::from_secs(3));
    let (code, took) = serve.terminate(DEADLINE);
    eprintln!("SQLite directory removed: stopped {took:?} after SIGTERM");
    let log = serve.log();
    assert!(log.contains(SHUTTING_DOWN), "{log}");
    assert_eq!(
        code, 3,
        "a stop without its last writes is a failure:\n{log}"
    );
    assert!(
        log.contains("stopped without its last writes: the node's stop:"),
        "says why:\n{log}"
    );
}

/// The admin connection of the test server, and a fresh database on it.
async fn pg_pair() -> Option<(sqlx::PgConnection, String, String)> {
    use sqlx::Connection;
    let url = pg_database().await?;
    let (base, name) = url.rsplit_once('/').unwrap();
    let admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    Some((admin, url.clone(), name.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_sigterm_while_postgres_refuses_connections() {
    let Some((mut admin, url, name)) = pg_pair().await else {
        return;
    };
    let env = Env::new();
    let mut serve = tokio::task::block_in_place(|| Detached::start(&env, &url, &[]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // As good as stopped for this service: its sessions are ended and no
    // new one is let in.
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        serve.wait_log("node heartbeat failed");
        std::thread::sleep(Duration::from_secs(3));
        let (code, took) = serve.terminate(DEADLINE);
        eprintln!("PostgreSQL refusing connections: stopped {took:?} after SIGTERM");
        let log = serve.log();
        assert!(log.contains(SHUTTING_DOWN), "{log}");
        assert_eq!(code, 3, "{log}");
        assert!(
            log.contains("stopped without its last writes: the node's stop:"),
            "{log}"
        );
    });
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// A TCP proxy to the test server that can be frozen: from then on it
/// neither forwards a byte nor closes a connection, old or new, as a
/// server behind a network partition.
async fn freezable_proxy(upstream: (String, u16)) -> (u16, Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let frozen = Arc::new(AtomicBool::new(false));
    let f = frozen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            if f.load(Ordering::SeqCst) {
                held.push(client);
                continue;
            }
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut to) in [(cr, sw), (sr, cw)].map(|(r, w)| {
                (
                    Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                    w,
                )
            }) {
                let f = f.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if f.load(Ordering::SeqCst) {
                            // Holds both ends open, forwarding nothing.
                            std::future::pending::<()>().await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (port, frozen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_sigterm_while_postgres_does_not_answer() {
    let Some((_admin, url, _)) = pg_pair().await else {
        return;
    };
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    if opts.get_host().starts_with('/') {
        panic!("the test server must be reached over TCP here: {url}");
    }
    let (port, frozen) = freezable_proxy((opts.get_host().to_string(), opts.get_port())).await;
    let at = format!("@{}:{}/", opts.get_host(), opts.get_port());
    assert!(url.contains(&at), "{url}");
    let proxied_url = url.replace(&at, &format!("@127.0.0.1:{port}/"));
    let env = Env::new();
    let mut serve = tokio::task::block_in_place(|| Detached::start(&env, &proxied_url, &[]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    frozen.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| {
        // Every wait is bounded: the claim's grace, the actors' stop, the
        // last writes' patience (5 + 5 + 10 + 10 s at most).
        let (code, took) = serve.terminate(Duration::from_secs(45));
        let log = serve.log();
        assert!(log.contains(SHUTTING_DOWN), "{log}");
        assert_eq!(code, 3, "{log}");
        assert!(
            log.contains("stopped without its last writes: the node's stop: no answer within"),
            "{log}"
        );
        eprintln!("stopped {took:?} after SIGTERM with the database not answering");
    });
}
