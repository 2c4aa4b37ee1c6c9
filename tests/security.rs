//! The attack paths of the security review (issue 27), each reproduced
//! against a real `jobvisor serve` over real TCP (and TLS), as an attacker
//! or a careless operator would try them, and each refused.

mod common;

use common::*;
use jobvisor::Status;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends `head` (request line and headers, without the blank line) and
/// `body` on a fresh connection; the reply.
fn raw(addr: &str, head: &str, body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let req = format!(
        "{head}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap(),
        headers: head.to_ascii_lowercase(),
        body: rest.to_string(),
    }
}

fn count(env: &Env) -> usize {
    env.ok(&["exec", "list", "--json"])
        .parse::<Value>()
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_or_a_rebound_name_cannot_act_or_read() {
    let env = Env::new();
    env.ok(&["queue", "set-limit", "mail", "2"]);
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let body = r#"{"handler":"noop"}"#;

    // A no-cors fetch with a Blob body: no JSON type, so no preflight.
    for ty in [
        "",
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
    ] {
        let r = raw(
            &addr,
            format!("POST /v1/executions HTTP/1.1\r\nHost: {addr}\r\n{ty}").trim_end(),
            body,
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (415, "unsupported_media_type"),
            "{ty:?}: {}",
            r.body
        );
        let r = raw(
            &addr,
            format!("POST /v1/queues/mail/pause HTTP/1.1\r\nHost: {addr}\r\n{ty}").trim_end(),
            "",
        );
        assert_eq!(r.status, 415, "{}", r.body);
    }
    // The JSON type from another origin (what a CORS request would carry).
    let r = raw(
        &addr,
        &format!("POST /v1/executions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nOrigin: http://localhost:{}", port.parse::<u16>().unwrap() + 1),
        body,
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "cross_origin"),
        "{}",
        r.body
    );
    let r = raw(
        &addr,
        &format!("POST /v1/executions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nSec-Fetch-Site: cross-site"),
        body,
    );
    assert_eq!((r.status, r.code().as_str()), (403, "cross_origin"));
    let r = raw(&addr, &format!("POST /v1/executions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nOrigin: null"), body);
    assert_eq!(r.status, 403);
    // DNS rebinding: the attacker's name, resolved to loopback.
    for host in [
        "attacker.example",
        &format!("attacker.example:{port}"),
        "localhost:1",
    ] {
        let r = raw(
            &addr,
            &format!("GET /v1/handlers HTTP/1.1\r\nHost: {host}"),
            "",
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "host_not_allowed"),
            "{host}: {}",
            r.body
        );
        let r = raw(
            &addr,
            &format!(
                "POST /v1/executions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
            ),
            body,
        );
        assert_eq!(r.status, 403, "{host}");
    }
    // The login form checks the origin too (a page could otherwise log the
    // browser in with a token of its own choosing).
    let r = raw(
        &addr,
        &format!("POST /ui/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nOrigin: http://evil.example"),
        "token=whatever",
    );
    assert_eq!((r.status, r.code().as_str()), (403, "cross_origin"));
    assert_eq!(count(&env), 0, "nothing was created");
    let queues: Value = env.ok(&["queue", "list", "--json"]).parse().unwrap();
    assert!(
        queues
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["paused"] != true),
        "nothing was paused: {queues}"
    );

    // The same origin, the right type: it acts. So does a name allowed.
    let r = raw(
        &addr,
        &format!("POST /v1/executions HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json; charset=utf-8\r\nOrigin: http://localhost:{port}\r\nSec-Fetch-Site: same-origin"),
        body,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    drop(serve);
    let serve = env.serve(&["--allowed-host", "jobs.example.com"]);
    let addr = serve.http_addr();
    let r = raw(
        &addr,
        "GET /v1/handlers HTTP/1.1\r\nHost: jobs.example.com",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let bad = env.cli(&["serve", "--allowed-host", "http://x/"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_built_ins_exist_only_where_asked_for_and_append_stays_in_its_directory() {
    let env = Env::new();
    for name in ["append", "panic", "misbehave"] {
        let out = env.cli(&["run", name]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unknown handler"),
            "{name}"
        );
    }
    let serve = env.serve(&[]);
    let r = post(
        &serve.http_addr(),
        "/v1/executions",
        r#"{"handler":"append","payload":{"path":"/etc/x"}}"#,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    drop(serve);
    // --test-builtins needs its directory.
    let out = env.cli_env(
        &["serve", "--test-builtins"],
        &[("JOBVISOR_APPEND_DIR", "")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JOBVISOR_APPEND_DIR"));

    let env = Env::with_test_builtins();
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("owned");
    std::os::unix::fs::symlink(outside.path(), env.path("escape")).unwrap();
    for (mode, path) in [
        ("inproc", target.display().to_string()),
        ("process", target.display().to_string()),
        ("inproc", "../../etc/jobvisor-owned".to_string()),
        ("process", "escape/owned".to_string()),
    ] {
        let payload = json!({ "path": path }).to_string();
        let id = env.enqueue(&[
            "append",
            "--mode",
            mode,
            "--payload",
            &payload,
            "--retries",
            "3",
        ]);
        let e = finished(store.as_ref(), id).await;
        assert_eq!(
            (e.status, e.next_id),
            (Status::Failed, None),
            "{mode} {path}: {e:?}"
        );
        assert!(
            e.error.as_deref().unwrap_or("").contains("outside"),
            "{e:?}"
        );
    }
    assert!(!target.exists(), "nothing was written outside");
    for mode in ["inproc", "process"] {
        let id = env.enqueue(&[
            "append",
            "--mode",
            mode,
            "--payload",
            r#"{"path":"inside"}"#,
        ]);
        let e = finished(store.as_ref(), id).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
    }
    let lines = std::fs::read_to_string(env.path("inside")).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_secrets_and_files_are_kept_private() {
    let env = Env::new();
    if nix::unistd::Uid::effective().is_root() {
        // A uid with no passwd entry has no group of its own.
        let out = env.cli(&[
            "handler",
            "add",
            "w",
            "--exec",
            "/bin/true",
            "--run-as",
            "43210",
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "jobvisor: uid 43210 has no passwd entry: give --group"
        );
        env.ok(&[
            "handler",
            "add",
            "w",
            "--exec",
            "/usr/bin/id",
            "--run-as",
            "43210",
            "--group",
            "43210",
        ]);
        let id = env.enqueue(&["w"]);
        let _serve = env.serve(&[]);
        let store = env.store().await;
        let e = finished(store.as_ref(), id).await;
        let logs = store.logs(id, 0, None, 100).await.unwrap();
        let text: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(e.status, Status::Succeeded, "{e:?} {text:?}");
        assert!(
            text.iter()
                .any(|l| l.starts_with("uid=43210 gid=43210 groups=43210")),
            "{text:?}"
        );

        // A world-writable program (or directory) is refused under root.
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog");
        std::fs::write(&prog, "#!/bin/sh\necho hi\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o777)).unwrap();
        let p = prog.to_str().unwrap();
        let out = env.cli(&["handler", "add", "ww", "--exec", p]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("world-writable"));
        env.ok(&["handler", "add", "ww", "--exec", p, "--allow-writable"]);
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        env.ok(&["handler", "add", "ok", "--exec", p]);
        // Made writable after it was registered: refused at spawn, for good.
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o757)).unwrap();
        let id = env.enqueue(&["ok", "--retries", "2"]);
        let e = finished(store.as_ref(), id).await;
        assert_eq!((e.status, e.next_id), (Status::Failed, None), "{e:?}");
        assert!(
            e.error.as_deref().unwrap_or("").contains("world-writable"),
            "{e:?}"
        );
    }

    // Secrets: the API (even the read-only token) sees names, not values.
    env.ok(&[
        "handler",
        "add",
        "sec",
        "--exec",
        "/bin/true",
        "--env",
        "API_KEY=s3cret-value",
    ]);
    let serve = env.serve_env(
        &[],
        &[
            ("JOBVISOR_API_TOKEN", "rw-token-0123456789"),
            ("JOBVISOR_API_TOKEN_READONLY", "ro-token-0123456789"),
        ],
    );
    let addr = serve.http_addr();
    for path in ["/v1/handlers", "/v1/handlers/sec"] {
        let r = request(&addr, "GET", path, None, Some("ro-token-0123456789"));
        assert_eq!(r.status, 200);
        assert!(!r.body.contains("s3cret-value"), "{}", r.body);
        assert!(
            r.body.contains("API_KEY") && r.body.contains("<redacted>"),
            "{}",
            r.body
        );
    }
    let shown = env.ok(&["handler", "show", "sec"]);
    assert!(
        !shown.contains("s3cret-value") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert!(env
        .ok(&["handler", "show", "sec", "--reveal"])
        .contains("s3cret-value"));

    // The database and its WAL are the owner's alone.
    use std::os::unix::fs::MetadataExt;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", env.db);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}: {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_budgets_hold_in_process_and_count_what_is_stored() {
    let env = Env::new();
    env.ok(&["handler", "add", "logs", "--builtin", "--max-log", "1M"]);
    let _serve = env.serve(&[]);
    let store = env.store().await;
    for mode in ["inproc", "process"] {
        // 3,000 lines of about 1 KiB: 3 MB asked for, 1 MiB allowed.
        let message = "x".repeat(1000);
        let payload = json!({"count": 3000, "message": message}).to_string();
        let id = env.enqueue(&["logs", "--mode", mode, "--payload", &payload]);
        let e = finished(store.as_ref(), id).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        let lines = store.logs(id, 0, None, 10_000).await.unwrap();
        let stored: usize = lines.iter().map(|l| l.message.len() + 64).sum();
        assert!(stored <= 1024 * 1024 + 200, "{mode}: {stored} bytes stored");
        assert!(
            lines.len() > 900 && lines.len() < 1100,
            "{mode}: {} lines",
            lines.len()
        );
        let marker = lines.last().unwrap();
        assert!(
            marker.message.starts_with("output limit 1 MiB reached:")
                && marker.message.ends_with("not stored"),
            "{mode}: {}",
            marker.message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_bounded_by_rows_bytes_and_streams() {
    let env = Env::new();
    let big = json!({"handler": "echo", "payload": {"blob": "y".repeat(900_000)}}).to_string();
    let store = env.store().await;
    let serve = env.serve(&["--max-streams", "2"]);
    let addr = serve.http_addr();
    for _ in 0..3 {
        let r = post(&addr, "/v1/executions", &big);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = get(&addr, "/v1/executions?limit=1001");
    assert_eq!(r.status, 400, "{}", r.body);
    let ids: Vec<uuid::Uuid> = store
        .executions(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    for id in &ids {
        finished(store.as_ref(), *id).await;
    }
    let r = get(&addr, "/v1/executions?limit=1000");
    assert!(
        r.body.len() < 64 * 1024,
        "{} bytes for three rows",
        r.body.len()
    );
    for row in r.json().as_array().unwrap() {
        assert_eq!(row["payload_truncated"], true, "{row}");
        assert_eq!(row["output_truncated"], true);
        assert!(row["payload"]
            .as_str()
            .unwrap()
            .starts_with(r#"{"blob":"yyy"#));
    }
    let whole = get(&addr, &format!("/v1/executions/{}", ids[0]));
    assert_eq!(
        whole.json()["payload"]["blob"].as_str().unwrap().len(),
        900_000
    );
    assert!(whole.json().get("payload_truncated").is_none());

    // Two streams are open; a third is refused, with a time to come back.
    let open = |path: String| {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        s
    };
    // Two streams that stay open: the node's events, and a run that is
    // still running (a finished one's stream ends, giving its place back).
    let sleeper = post(
        &addr,
        "/v1/executions",
        r#"{"handler":"sleep","payload":{"ms":600000}}"#,
    );
    assert_eq!(sleeper.status, 201, "{}", sleeper.body);
    let sleeper = sleeper.json()["id"].as_str().unwrap().to_string();
    let _a = open("/v1/events".into());
    let _b = open(format!("/v1/executions/{sleeper}/stream"));
    let r = get(&addr, "/v1/events");
    assert_eq!((r.status, r.code().as_str()), (503, "too_many_streams"));
    assert!(
        r.headers.to_ascii_lowercase().contains("retry-after: 5"),
        "{}",
        r.headers
    );
    drop(_a);
    let start = Instant::now();
    while get(&addr, "/healthz").status != 200 || {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(s, "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap();
        !String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200")
    } {
        assert!(
            start.elapsed() < DEADLINE,
            "a closed stream gives its place back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_guessers_are_shut_out() {
    let env = Env::new();
    let serve = env.serve_env(&[], &[("JOBVISOR_API_TOKEN", "the-right-token-0123")]);
    let addr = serve.http_addr();
    // A slow loris: half a request head, then nothing.
    let mut loris = TcpStream::connect(&addr).unwrap();
    loris.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(loris, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    let n = loris.read(&mut buf).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "closed without an answer: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(30),
        "{waited:?}"
    );

    // A slow body: a whole head, then a promised body that never comes.
    let mut trickle = TcpStream::connect(&addr).unwrap();
    trickle.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        trickle,
        "POST /v1/executions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer the-right-token-0123\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"handler\""
    )
    .unwrap();
    let start = Instant::now();
    let mut answer = String::new();
    let _ = trickle.read_to_string(&mut answer);
    let waited = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"timeout""#), "{answer}");
    assert!(
        waited >= Duration::from_secs(29) && waited < Duration::from_secs(50),
        "{waited:?}"
    );

    // Ten wrong tokens within a minute: the address is shut out.
    for i in 0..10 {
        let r = request(&addr, "GET", "/v1/jobs", None, Some(&format!("guess-{i}")));
        assert_eq!(r.status, 401, "guess {i}");
    }
    let r = request(&addr, "GET", "/v1/jobs", None, Some("the-right-token-0123"));
    assert_eq!((r.status, r.code().as_str()), (429, "too_many_failures"));
    assert!(r.headers.to_ascii_lowercase().contains("retry-after:"));
    // Requests with no credential, or a session the service forgot, do not
    // shut anyone out (a dashboard left open across a restart).
    let other = env.serve_env(&[], &[("JOBVISOR_API_TOKEN", "the-right-token-0123")]);
    let other_addr = other.http_addr();
    for _ in 0..15 {
        assert_eq!(get(&other_addr, "/v1/jobs").status, 401);
        let stale = raw(
            &other_addr,
            &format!(
                "GET /v1/jobs HTTP/1.1\r\nHost: {other_addr}\r\nCookie: jobvisor_session=forgotten"
            ),
            "",
        );
        assert_eq!(stale.status, 401);
    }
    let r = request(
        &other_addr,
        "GET",
        "/v1/jobs",
        None,
        Some("the-right-token-0123"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let log = serve.log();
    assert!(
        log.contains("authentication failed") && log.contains("peer=127.0.0.1"),
        "{log}"
    );
    assert!(!log.contains("guess-"), "the tokens tried are never logged");

    // Off loopback without TLS: said once at start.
    let open = env.serve_env(
        &["--listen", "0.0.0.0:0"],
        &[("JOBVISOR_API_TOKEN", "the-right-token-0123")],
    );
    open.http_addr();
    let start = Instant::now();
    while !open.log().contains("without TLS") {
        assert!(start.elapsed() < DEADLINE, "no warning:\n{}", open.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let said = open.log();
    assert_eq!(said.matches("without TLS").count(), 1, "{said}");
    drop(open);

    // A short token off loopback is refused at start, and by check-config.
    let out = env.cli_env(
        &["serve", "--listen", "0.0.0.0:0"],
        &[("JOBVISOR_API_TOKEN", "short")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
    let cfg = env.path("short.toml");
    std::fs::write(&cfg, "listen = \"0.0.0.0:7180\"\ntoken = \"a\"\n").unwrap();
    let out = env.cli(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_with_a_secure_cookie() {
    let env = Env::new();
    let (cert, key) = (env.path("cert.pem"), env.path("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let serve = env.serve_env(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[("JOBVISOR_API_TOKEN", "tls-token-0123456789")],
    );
    let addr = serve.http_addr();
    let port = addr.rsplit(':').next().unwrap();
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-i", "--cacert", cert.to_str().unwrap()])
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let health = curl(&[&format!("https://localhost:{port}/healthz")]);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let login = curl(&[
        "-X",
        "POST",
        "-d",
        "token=tls-token-0123456789",
        &format!("https://localhost:{port}/ui/login"),
    ]);
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{login}"));
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            &format!("http://localhost:{port}/healthz"),
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("ok"));
    // A key that is not the certificate's is refused at start.
    let other = env.path("other.pem");
    std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&other)
        .output()
        .unwrap();
    let out = env.cli(&[
        "serve",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        other.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The cross-site attacks in a real browser: a page on another port posts
/// with `no-cors` fetch and with HTML forms, and a DNS-rebinding page sends
/// same-origin requests under its own name. Every request reaches the
/// service and is refused; nothing is created, nothing is paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pages_in_a_real_browser_create_and_pause_nothing() {
    let Some((dir, chromium)) = browser() else {
        return;
    };
    let env = Env::new();
    env.ok(&["queue", "set-limit", "mail", "2"]);
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let out = std::process::Command::new("node")
        .arg(dir.join("crosssite.mjs"))
        .env("JV_ADDR", &addr)
        .env("JV_CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser checks failed");
    assert!(text.contains("all checks passed"));
    assert_eq!(count(&env), 0, "nothing was created");
    let queues: Value = env.ok(&["queue", "list", "--json"]).parse().unwrap();
    let mail = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "mail")
        .unwrap_or_else(|| panic!("{queues}"));
    assert_ne!(mail["paused"], true, "nothing was paused: {queues}");
}

/// `jobvisor --database URL ARGS...`.
fn cli_at(url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(jobvisor_bin())
        .arg("--database")
        .arg(url)
        .args(args)
        .env("JOBVISOR_WORKER", worker_bin())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Runs openssl with `args`, in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA of its own (`NAME-ca.pem`, `NAME-ca.key`) in `dir`.
fn make_ca(dir: &std::path::Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
        ],
    );
}

/// PostgreSQL over TLS through sqlx's rustls: `sslmode=require` encrypts,
/// `verify-full` with the server's CA connects, and with another CA it is
/// refused, naming the certificate as the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_is_reached_over_tls_and_verify_full_checks_the_ca() {
    let Some(url) = pg_database().await else {
        return;
    };
    use sqlx::Connection;
    let base = url.rsplit_once('/').unwrap().0.to_string();
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    // The server's certificate: issued by a CA of this test's, for localhost.
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "right");
    make_ca(dir.path(), "wrong");
    openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.path().join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "right-ca.pem",
            "-CAkey",
            "right-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    // The server reads them as its own user.
    let data_dir: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let owner = std::fs::metadata(&data_dir).unwrap().uid();
    let server_dir =
        std::path::Path::new(&data_dir).join(format!("tls-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir(&server_dir).unwrap();
    for f in ["server.pem", "server.key"] {
        let to = server_dir.join(f);
        std::fs::copy(dir.path().join(f), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        nix::unistd::chown(&to, Some(nix::unistd::Uid::from_raw(owner)), None).unwrap();
    }
    nix::unistd::chown(&server_dir, Some(nix::unistd::Uid::from_raw(owner)), None).unwrap();
    let cert = server_dir.join("server.pem").display().to_string();
    let key = server_dir.join("server.key").display().to_string();
    configure(
        &mut admin,
        &[
            format!("ALTER SYSTEM SET ssl_cert_file = '{cert}'"),
            format!("ALTER SYSTEM SET ssl_key_file = '{key}'"),
            "ALTER SYSTEM SET ssl = on".into(),
        ],
    )
    .await;
    // A reload is asynchronous: wait until new connections get the new certificate.
    let localhost = url.replacen("@127.0.0.1:", "@localhost:", 1);
    let sep = if localhost.contains('?') { '&' } else { '?' };
    let right = dir.path().join("right-ca.pem").display().to_string();
    let wrong = dir.path().join("wrong-ca.pem").display().to_string();
    let verified = format!("{localhost}{sep}sslmode=verify-full&sslrootcert={right}");
    let start = Instant::now();
    while !cli_at(&verified, &["migrate"]).status.success() {
        assert!(
            start.elapsed() < DEADLINE,
            "verify-full with the right CA never connected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // require: the connection is encrypted.
    let required = format!("{localhost}{sep}sslmode=require");
    let env = Env {
        db: required.clone(),
        ..Env::new()
    };
    let _serve = env.serve(&["--listen", "off"]);
    let db_name = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let start = Instant::now();
    loop {
        let encrypted: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND s.ssl",
        )
        .bind(&db_name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if encrypted > 0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "serve never connected over TLS");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = cli_at(&required, &["run", "noop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // verify-full with the right CA works; with another it is refused.
    let out = cli_at(&verified, &["exec", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = format!("{localhost}{sep}sslmode=verify-full&sslrootcert={wrong}");
    let out = cli_at(&refused, &["exec", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.to_ascii_lowercase().contains("certificate"),
        "names the cause: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let password = std::env::var("PGPASSWORD").unwrap_or_default();
    assert!(
        password.is_empty() || !stderr.contains(&password),
        "the password stays out: {stderr}"
    );
    eprintln!("verify-full with another CA: {stderr}");

    let reset = ["ssl_cert_file", "ssl_key_file", "ssl"].map(|k| format!("ALTER SYSTEM RESET {k}"));
    configure(&mut admin, &reset).await;
}

/// Runs each of `statements` on the server's configuration, then has it
/// reload.
async fn configure(admin: &mut sqlx::PgConnection, statements: &[String]) {
    for sql in statements
        .iter()
        .map(String::as_str)
        .chain(["SELECT pg_reload_conf()"])
    {
        sqlx::query(sql).execute(&mut *admin).await.unwrap();
    }
}
