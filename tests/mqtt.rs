//! MQTT in and out against a real broker: Debian's mosquitto, started on
//! a free port with persistence and a password file, and its own clients
//! (mosquitto_pub, mosquitto_sub) on the other side.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "ops";
const PASSWORD: &str = "pw:with@odd/chars";

/// A mosquitto broker on loopback, its state in a directory of the test.
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether mosquitto and its clients are here (said loudly if not; under
/// CI, a failure).
fn have_mosquitto() -> bool {
    let found = [
        "mosquitto",
        "mosquitto_pub",
        "mosquitto_sub",
        "mosquitto_passwd",
    ]
    .iter()
    .all(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        let msg = "mosquitto is not installed (apt-get install mosquitto mosquitto-clients)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("!!! SKIPPED: {msg}");
    }
    found
}

/// Waits until a broker listens on `port`.
fn listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "mosquitto listens"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Broker {
    fn start(env: &Env) -> Broker {
        let dir = env.path(&format!("broker-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(dir.join("passwd"))
            .args([USER, PASSWORD])
            .status()
            .unwrap();
        assert!(ok.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut b = Broker {
            child: None,
            port,
            dir,
        };
        b.restart();
        b
    }

    /// Starts it (again, on the same port and state).
    fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\npersistence true\npersistence_location {}/\n\
                 allow_anonymous false\npassword_file {}/passwd\nuser root\n\
                 max_queued_messages 100000\n",
                self.port,
                self.dir.display(),
                self.dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        listening(self.port);
    }

    /// Stops it with SIGTERM, when it saves its state to disk.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mqtt://{USER}@127.0.0.1:{}", self.port)
    }

    /// Publishes each of `messages` to `topic` with QoS 1.
    fn publish(&self, topic: &str, messages: &[String]) {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", USER, "-P", PASSWORD, "-q", "1", "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            for m in messages {
                writeln!(stdin, "{m}").unwrap();
            }
        }
        assert!(child.wait().unwrap().success(), "mosquitto_pub published");
    }

    /// Subscribes to `topic` with mosquitto_sub, each message a line
    /// `TOPIC PAYLOAD`.
    fn subscribe(&self, topic: &str) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", USER, "-P", PASSWORD, "-q", "1", "-v", "-t", topic])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Subscriber { child, rx }
    }
}

struct Subscriber {
    child: Child,
    rx: std::sync::mpsc::Receiver<String>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Subscriber {
    /// The next `n` messages, as (topic, JSON payload).
    fn take(&self, n: usize) -> Vec<(String, Value)> {
        (0..n)
            .map(|i| {
                let line = self
                    .rx
                    .recv_timeout(DEADLINE)
                    .unwrap_or_else(|_| panic!("message {} of {n} was published", i + 1));
                let (topic, body) = line.split_once(' ').expect("TOPIC PAYLOAD");
                (topic.to_string(), serde_json::from_str(body).unwrap())
            })
            .collect()
    }
}

fn config(env: &Env, text: &str) -> String {
    let path = env.path(&format!("jobvisor-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The runs of handler `echo` by their payload's `id` (first attempts:
/// a run interrupted by a SIGKILL is tried again, as its own execution).
async fn runs_by_id(env: &Env) -> BTreeMap<i64, Vec<jobvisor::Execution>> {
    let store = env.store().await;
    let mut by: BTreeMap<i64, Vec<jobvisor::Execution>> = BTreeMap::new();
    for e in runs_of(store.as_ref(), "echo").await {
        if e.attempt != 1 {
            continue;
        }
        if let Some(id) = e.payload["id"].as_i64() {
            by.entry(id).or_default().push(e);
        }
    }
    by
}

fn messages(ids: std::ops::Range<i64>) -> Vec<String> {
    ids.map(|i| json!({"id": i, "order": {"n": i}}).to_string())
        .collect()
}

async fn messages_become_runs(env: &Env) {
    if !have_mosquitto() {
        return;
    }
    let mut broker = Broker::start(env);
    let cfg = config(
        env,
        &format!(
            r#"
[[mqtt.subscribe]]
broker = "{}"
password_env = "MQTT_PASSWORD"
topic = "orders/+"
handler = "echo"
queue = "orders"
unique_key_from = "/id"
tags = ["mqtt"]
"#,
            broker.url()
        ),
    );
    let vars = [("MQTT_PASSWORD", PASSWORD)];
    let mut serve = env.serve_env(&["--config", &cfg], &vars);
    // Subscribed: a message published now is heard (the session is made
    // at the first connection; what came before it is not its own).
    eventually("the subscription", || async {
        broker.publish("orders/probe", &["{\"probe\": true}".into()]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let store = env.store().await;
        let runs = runs_of(store.as_ref(), "echo").await;
        runs.iter()
            .any(|e| e.payload["probe"] == true)
            .then_some(())
    })
    .await;
    broker.publish("orders/eu", &messages(0..50));
    broker.publish("orders/us", &["not json".into()]);
    // The same message twice is one run: its unique key is held.
    broker.publish("orders/eu", &messages(0..1));
    let by = eventually("50 runs", || async {
        let by = runs_by_id(env).await;
        (by.len() == 50).then_some(by)
    })
    .await;
    let first = &by[&7][0];
    assert_eq!(first.payload, json!({"id": 7, "order": {"n": 7}}));
    assert_eq!(first.meta["topic"], "orders/eu");
    assert_eq!(first.queue, "orders");
    assert_eq!(first.tags, ["mqtt"]);
    let store = env.store().await;
    let text = eventually("the text message's run", || async {
        runs_of(store.as_ref(), "echo")
            .await
            .into_iter()
            .find(|e| e.payload.get("text").is_some())
    })
    .await;
    assert_eq!(text.payload, json!({"text": "not json"}));
    assert_eq!(text.meta["topic"], "orders/us");

    // The broker restarts: the service connects again and takes what is
    // published after.
    broker.stop();
    broker.restart();
    broker.publish("orders/eu", &messages(50..60));
    // The service stops; what is published meanwhile waits in its
    // session, which the broker keeps through a restart of its own.
    eventually("the ten after the restart", || async {
        (runs_by_id(env).await.len() == 60).then_some(())
    })
    .await;
    serve.stop();
    broker.publish("orders/eu", &messages(60..80));
    broker.stop();
    broker.restart();
    let _serve = env.serve_env(&["--config", &cfg], &vars);
    let by = eventually("the twenty sent while it was stopped", || async {
        let by = runs_by_id(env).await;
        (by.len() == 80).then_some(by)
    })
    .await;
    // Each message ran once: none lost, none twice.
    assert_eq!(
        by.keys().copied().collect::<Vec<_>>(),
        (0..80).collect::<Vec<_>>()
    );
    assert!(by.values().all(|runs| runs.len() == 1), "one run each");
}

#[tokio::test]
async fn messages_become_runs_and_a_broker_restart_loses_nothing_on_sqlite() {
    messages_become_runs(&Env::new()).await;
}

#[tokio::test]
async fn messages_become_runs_and_a_broker_restart_loses_nothing_on_postgres() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    messages_become_runs(&env).await;
}

/// A message is acknowledged only once its run is committed: a service
/// killed (SIGKILL) while messages pour in loses none of them, and the
/// unique key keeps the re-delivered ones from running twice.
#[tokio::test]
async fn a_service_killed_mid_stream_loses_no_message() {
    if !have_mosquitto() {
        return;
    }
    let env = Env::new();
    let broker = Broker::start(&env);
    let cfg = config(
        &env,
        &format!(
            "[[mqtt.subscribe]]\nbroker = \"mqtt://{USER}:{}@127.0.0.1:{}\"\ntopic = \"in/#\"\nhandler = \"echo\"\nunique_key_from = \"/id\"\n",
            PASSWORD.replace(':', "%3A").replace('@', "%40").replace('/', "%2F"),
            broker.port
        ),
    );
    let mut serve = env.serve(&["--config", &cfg]);
    eventually("the subscription", || async {
        broker.publish("in/probe", &[json!({"id": -1}).to_string()]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        runs_by_id(&env).await.contains_key(&-1).then_some(())
    })
    .await;
    // Fewer than the 1,000 runs `runs_of` reads.
    let total = 800;
    let publisher = {
        let msgs = messages(0..total);
        let port = broker.port;
        std::thread::spawn(move || {
            let b = Broker {
                child: None,
                port,
                dir: PathBuf::new(),
            };
            b.publish("in/a/b", &msgs);
        })
    };
    eventually("some of them taken", || async {
        (runs_by_id(&env).await.len() > 100).then_some(())
    })
    .await;
    serve.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = serve.stop();
    publisher.join().unwrap();
    let _serve = env.serve(&["--config", &cfg]);
    let by = eventually("every message", || async {
        let by = runs_by_id(&env).await;
        (by.len() == total as usize + 1).then_some(by)
    })
    .await;
    let twice: Vec<(i64, Vec<String>)> = by
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .map(|(id, runs)| {
            (
                *id,
                runs.iter()
                    .map(|e| format!("{} {:?} {:?}", e.id, e.status, e.unique_key))
                    .collect(),
            )
        })
        .collect();
    assert!(
        twice.is_empty(),
        "a re-delivered message runs once: {twice:?}"
    );
}

/// `[[mqtt.publish]]`: events come out on the broker, on the topic the
/// template makes, as the webhooks' JSON body.
#[tokio::test]
async fn events_are_published_to_the_broker() {
    if !have_mosquitto() {
        return;
    }
    let env = Env::new();
    let broker = Broker::start(&env);
    let sub = broker.subscribe("jobvisor/#");
    let cfg = config(
        &env,
        &format!(
            r#"
[[mqtt.publish]]
broker = "{}"
password_env = "MQTT_PASSWORD"
topic = "jobvisor/{{event}}/{{handler}}"
events = ["succeeded", "failed"]
"#,
            broker.url()
        ),
    );
    let listed = env.ok(&["check-config", &cfg]);
    assert!(listed.contains("1 webhooks"), "{listed}");
    let _serve = env.serve_env(&["--config", &cfg], &[("MQTT_PASSWORD", PASSWORD)]);
    let hooks = eventually("the publication, as a webhook", || async {
        let l = env.ok(&["webhook", "list", "--json"]);
        l.contains("mqtt-publish-1").then_some(l)
    })
    .await;
    let hooks: Vec<Value> = serde_json::from_str(&hooks).unwrap();
    assert_eq!(hooks[0]["topic"], "jobvisor/{event}/{handler}");
    let ok = env
        .enqueue(&["echo", "--payload", r#"{"n": 1}"#])
        .to_string();
    let failed = env
        .enqueue(&["fail", "--payload", r#"{"message": "boom"}"#])
        .to_string();
    let mut got = sub.take(2);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got[0].0, "jobvisor/failed/fail");
    assert_eq!(got[0].1["execution"]["id"], failed.as_str());
    assert_eq!(got[0].1["event"], "failed");
    assert_eq!(got[1].0, "jobvisor/succeeded/echo");
    assert_eq!(got[1].1["execution"]["id"], ok.as_str());
    assert_eq!(got[1].1["webhook"], "mqtt-publish-1");
    assert!(got[1].1["delivery"].is_string());
}

#[test]
fn bad_mqtt_tables_are_refused_with_their_line() {
    let env = Env::new();
    for (table, says) in [
        (
            "[[mqtt.subscribe]]\nbroker = \"http://h\"\ntopic = \"a\"\nhandler = \"echo\"\n",
            "mqtt://",
        ),
        (
            "[[mqtt.subscribe]]\nbroker = \"mqtt://h\"\ntopic = \"a/#/b\"\nhandler = \"echo\"\n",
            "'#'",
        ),
        (
            "[[mqtt.subscribe]]\nbroker = \"mqtt://h\"\ntopic = \"a\"\nhandler = \"echo\"\nunique_key_from = \"id\"\n",
            "JSON pointer",
        ),
        (
            "[[mqtt.subscribe]]\nbroker = \"mqtt://h\"\ntopic = \"a\"\nhandler = \"webhook\"\n",
            "jobvisor's own",
        ),
        (
            "[[mqtt.publish]]\nbroker = \"mqtt://h\"\ntopic = \"out/+\"\nevents = [\"failed\"]\n",
            "wildcard",
        ),
        (
            "[[mqtt.publish]]\nbroker = \"https://h\"\nevents = [\"failed\"]\n",
            "not an mqtt://",
        ),
        (
            "[[mqtt.subscribe]]\nbroker = \"mqtt://h\"\ntopic = \"a\"\nhandler = \"echo\"\nqos = 2\n",
            "qos",
        ),
    ] {
        let cfg = config(&env, &format!("\n{table}"));
        let out = env.cli(&["check-config", &cfg]);
        assert_eq!(out.status.code(), Some(2), "{table}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{table}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// `bench --scenario mqtt` measures against a real broker and says both
/// delays.
#[test]
fn the_mqtt_bench_measures_message_to_run_against_a_bare_subscriber() {
    if !have_mosquitto() {
        return;
    }
    let env = Env::new();
    let mut broker = Broker::start(&env);
    // The bench logs in as nobody: a broker of its own that allows it.
    broker.stop();
    let conf = broker.dir.join("mosquitto.conf");
    let anonymous = format!(
        "listener {} 127.0.0.1\nallow_anonymous true\nuser root\n",
        broker.port
    );
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg({
            std::fs::write(&conf, anonymous).unwrap();
            &conf
        })
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    broker.child = Some(child);
    listening(broker.port);
    let out = env.ok(&[
        "bench",
        "--scenario",
        "mqtt",
        "--broker",
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "--latency-samples",
        "50",
        "--json",
    ]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["messages"], 50);
    for k in [
        "to_started_p50_ms",
        "to_started_p99_ms",
        "bare_p50_ms",
        "bare_p99_ms",
    ] {
        assert!(r[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {out}");
    }
    let out = env.cli(&["bench", "--scenario", "mqtt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--broker"));
}

/// `mqtts://` checks the broker's certificate against the CAs of
/// `SSL_CERT_FILE`: a broker whose CA it holds is trusted, as the README
/// says; without it, the connection is refused and nothing is taken.
#[tokio::test]
async fn an_mqtts_broker_is_checked_against_ssl_cert_file() {
    if !have_mosquitto() {
        return;
    }
    let env = Env::new();
    let dir = env.path("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |script: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "{script}");
    };
    // A CA of the test's own, and the broker's certificate for localhost.
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=jobvisor-test-ca");
    sh("openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj /CN=localhost");
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    sh("openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 1 -extfile san.ext");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!("listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/broker.pem\nkeyfile {d}/broker.key\nallow_anonymous true\nuser root\n"),
    )
    .unwrap();
    let mut broker = Broker {
        child: Some(
            Command::new("mosquitto")
                .arg("-c")
                .arg(dir.join("mosquitto.conf"))
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ),
        port,
        dir: dir.clone(),
    };
    listening(port);
    let cfg = config(
        &env,
        &format!("[[mqtt.subscribe]]\nbroker = \"mqtts://localhost:{port}\"\ntopic = \"secure/#\"\nhandler = \"echo\"\n"),
    );
    let publish = || {
        let ok = Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port.to_string(), "--cafile"])
            .arg(dir.join("ca.pem"))
            .args([
                "-q",
                "1",
                "-t",
                "secure/in",
                "-m",
                r#"{"id": 1, "tls": true}"#,
            ])
            .status()
            .unwrap();
        assert!(ok.success(), "mosquitto_pub over TLS");
    };
    // Without the CA: the broker is not trusted.
    let mut untrusted = env.serve_env(&["--config", &cfg], &[("SSL_CERT_FILE", "/dev/null")]);
    eventually("the refusal in the log", || async {
        untrusted.log().contains("MQTT subscription").then_some(())
    })
    .await;
    assert!(
        !untrusted.log().contains("MQTT subscription connected"),
        "{}",
        untrusted.log()
    );
    untrusted.stop();
    // With it: messages run.
    let ca = dir.join("ca.pem").display().to_string();
    let _serve = env.serve_env(&["--config", &cfg], &[("SSL_CERT_FILE", ca.as_str())]);
    eventually("a message over TLS, run", || async {
        publish();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let store = env.store().await;
        runs_of(store.as_ref(), "echo")
            .await
            .iter()
            .any(|e| e.payload["tls"] == true)
            .then_some(())
    })
    .await;
    broker.stop();
}

/// The peak resident memory of process `pid`, in MiB.
fn peak_mib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kb / 1024
}

/// A broker that sends without limit (no in-flight window) while runs
/// cannot be enqueued (the handler is not registered, so the first
/// message is held) does not make the service hold every message: at most
/// 64 are in hand, and the rest wait in the broker's session.
#[tokio::test]
async fn a_broker_with_no_inflight_limit_cannot_fill_the_services_memory() {
    if !have_mosquitto() {
        return;
    }
    let env = Env::new();
    let dir = env.path("flood");
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n\
             max_inflight_messages 0\nmax_queued_messages 0\nmax_queued_bytes 0\n\
             message_size_limit 0\n"
        ),
    )
    .unwrap();
    let mut broker = Broker {
        child: Some(
            Command::new("mosquitto")
                .arg("-c")
                .arg(dir.join("mosquitto.conf"))
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ),
        port,
        dir: dir.clone(),
    };
    listening(port);
    let cfg = config(
        &env,
        &format!("[[mqtt.subscribe]]\nbroker = \"mqtt://127.0.0.1:{port}\"\ntopic = \"flood/#\"\nhandler = \"not-registered\"\nclient_id = \"flood-test\"\n"),
    );
    let serve = env.serve(&["--config", &cfg]);
    eventually("the subscription", || async {
        serve
            .log()
            .contains("MQTT subscription connected")
            .then_some(())
    })
    .await;
    let before = peak_mib(serve.pid());
    // 600 messages of 1 MiB: 600 MiB, were they all taken in.
    let big = "x".repeat(1024 * 1024 - 64);
    let messages: Vec<String> = (0..600)
        .map(|i| format!("{{\"n\": {i}, \"pad\": \"{big}\"}}"))
        .collect();
    let (b, m) = (
        Broker {
            child: None,
            port,
            dir: PathBuf::new(),
        },
        messages,
    );
    let publisher = std::thread::spawn(move || b.publish("flood/in", &m));
    publisher.join().unwrap();
    eventually("the held message in the log", || async {
        serve
            .log()
            .contains("its handler is not registered")
            .then_some(())
    })
    .await;
    // Time for whatever the service would take in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let peak = peak_mib(serve.pid());
    assert!(
        peak < before + 200,
        "the service's peak memory grew from {before} MiB to {peak} MiB"
    );
    broker.stop();
}
