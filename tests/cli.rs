//! The command line: exit codes, one-line errors, JSON shapes, `run --wait`.

mod common;

use common::*;
use jobvisor::Status;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// A failure with exit `code` and one line on stderr that names `needle`.
fn assert_fails(out: std::process::Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("jobvisor: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "{stderr:?} should mention {needle:?}"
    );
    assert!(!stderr.contains("panicked"));
}

fn assert_bad_input(out: std::process::Output, needle: &str) {
    assert_fails(out, 2, needle);
}

/// A usage error keeps clap's names and suggestions in its one line; a
/// bare `jobvisor` (or a command group without its subcommand) prints the
/// help on stdout, as `--help` does, and exits 0.
#[test]
fn usage_errors_name_what_is_wrong_and_a_bare_command_prints_help() {
    let env = Env::new();
    assert_bad_input(
        env.cli(&["exce", "list"]),
        "unrecognized subcommand 'exce'; a similar subcommand exists: 'exec'",
    );
    assert_bad_input(
        env.cli(&["run", "noop", "--payloda", "{}"]),
        "unexpected argument '--payloda' found; a similar argument exists: '--payload'",
    );
    assert_bad_input(env.cli(&["run"]), "not provided: <HANDLER>");
    assert_bad_input(
        env.cli(&["job", "add"]),
        "not provided: --handler <HANDLER>, <NAME>",
    );
    let help = |args: &[&str]| {
        let out = Command::new(jobvisor_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {:?}", out.stderr);
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(help(&[]), help(&["--help"]));
    assert!(help(&[]).contains("Usage: jobvisor [OPTIONS] <COMMAND>"));
    assert_eq!(help(&["exec"]), help(&["exec", "--help"]));
}

/// `jobvisor completions bash` is a script bash accepts, and bash, asked
/// to complete `jobvisor ex` and `jobvisor run --pay`, offers `exec` and
/// `--payload`; zsh's and fish's scripts are for their shells; an unknown
/// shell is bad usage.
#[test]
fn completions_complete_in_a_real_bash() {
    let env = Env::new();
    let script = env.path("jobvisor.bash");
    let out = Command::new(jobvisor_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&script, &out.stdout).unwrap();
    let complete = |words: &str| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
             _jobvisor jobvisor \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash")
            .args(["-c", &program])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let offered = complete("jobvisor ex");
    assert!(offered.lines().any(|l| l == "exec"), "{offered:?}");
    let offered = complete("jobvisor run --pay");
    assert!(offered.lines().any(|l| l == "--payload"), "{offered:?}");
    for (shell, marker) in [
        ("zsh", "#compdef jobvisor"),
        ("fish", "complete -c jobvisor"),
    ] {
        let out = Command::new(jobvisor_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(marker),
            "{shell}"
        );
    }
    assert_bad_input(env.cli(&["completions", "tcsh"]), "invalid value 'tcsh'");
}

#[test]
fn bad_input_is_one_clear_line_and_exit_code_2() {
    let env = Env::new();
    assert_bad_input(env.cli(&["run", "nosuch"]), "unknown handler \"nosuch\"");
    assert_bad_input(
        env.cli(&["run", "echo", "--payload", "{bad"]),
        "invalid --payload JSON",
    );
    assert_bad_input(
        env.cli(&["run", "echo", "--timeout", "5 parsecs"]),
        "--timeout",
    );
    assert_bad_input(
        env.cli(&["run", "echo", "--mode", "thread"]),
        "unknown mode",
    );
    assert_bad_input(
        env.cli(&["exec", "show", "not-a-uuid"]),
        "invalid execution id",
    );
    assert_bad_input(
        env.cli(&["exec", "show", "01a202f6-5eba-7090-aa43-30ce76ab0227"]),
        "no execution",
    );
    assert_bad_input(env.cli(&["exec", "logs", "x", "--level", "loud"]), "loud");
    assert_bad_input(
        env.cli(&["handler", "add", "x", "--exec", "/nonexistent/prog"]),
        "/nonexistent/prog",
    );
    assert_bad_input(
        env.cli(&["handler", "add", "bad name", "--exec", "true"]),
        "invalid handler name",
    );
    assert_bad_input(env.cli(&["handler", "remove", "nosuch"]), "unknown handler");
    // Names and keys are bounded alike on every backend (what MySQL's
    // indexed columns hold), never cut short.
    let (name, key) = ("q".repeat(256), "k".repeat(701));
    assert_bad_input(
        env.cli(&["run", "echo", "--queue", &name]),
        "is 256 characters: at most 255 are allowed",
    );
    assert_bad_input(
        env.cli(&["run", "echo", "--unique-key", &key]),
        "unique key \"kkkkkkkkkkkkkkkk\"… is 701 characters: at most 700 are allowed",
    );
    env.ok(&[
        "run",
        "echo",
        "--queue",
        &name[1..],
        "--unique-key",
        &key[1..],
    ]);
    env.ok(&["handler", "add", "t", "--exec", "true"]);
    assert_bad_input(
        env.cli(&["handler", "add", "t", "--exec", "true"]),
        "already exists",
    );
    assert_bad_input(
        env.cli(&["run", "t", "--mode", "inproc"]),
        "only runs in process mode",
    );

    // Databases that are missing or unreadable are runtime failures: exit 3.
    assert_runtime_failure(
        cli_at("/nonexistent/dir/x.db", &["exec", "list"]),
        "no database at /nonexistent/dir/x.db",
    );
    assert_runtime_failure(
        cli_at("/nonexistent/dir/x.db", &["run", "echo"]),
        "no database at /nonexistent/dir/x.db",
    );
    let junk = env.dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    assert_runtime_failure(
        cli_at(junk.to_str().unwrap(), &["exec", "list"]),
        "not a database",
    );
}

/// `jobvisor --database DB ARGS...`, for databases other than a test's own.
fn cli_at(db: &str, args: &[&str]) -> std::process::Output {
    Command::new(jobvisor_bin())
        .arg("--database")
        .arg(db)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_runtime_failure(out: std::process::Output, needle: &str) {
    assert_fails(out, 3, needle);
}

#[test]
fn handlers_are_added_listed_shown_and_removed() {
    let env = Env::new();
    env.ok(&[
        "handler",
        "add",
        "greet",
        "--exec",
        "echo",
        "--arg",
        "hello",
        "--arg",
        "-n",
        "--timeout",
        "30s",
        "--env",
        "A=1",
    ]);
    let list = env.ok(&["handler", "list"]);
    assert!(list.contains("greet"), "{list}");
    assert!(list.contains("noop"), "built-ins are listed: {list}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["handler", "show", "greet", "--json"])).unwrap();
    assert_eq!(json["kind"], "exec");
    assert!(json["program"].as_str().unwrap().ends_with("/echo"));
    assert_eq!(json["args"], serde_json::json!(["hello", "-n"]));
    assert_eq!(json["limits"]["timeout_ms"], 30000);
    let all: serde_json::Value =
        serde_json::from_str(&env.ok(&["handler", "list", "--json"])).unwrap();
    assert!(
        all.as_array().unwrap().len() >= 7,
        "six built-ins and greet: {all}"
    );
    env.ok(&["handler", "remove", "greet"]);
    assert!(!env.ok(&["handler", "list"]).contains("greet"));
}

#[test]
fn run_wait_says_so_when_no_supervisor_serves_the_database() {
    let env = Env::new();
    env.ok(&["migrate"]);
    let mut child = Command::new(jobvisor_bin())
        .args(["--database", &env.db, "run", "echo", "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains("no supervisor is serving"), "{line:?}");
    assert!(line.contains("jobvisor serve"), "{line:?}");
}

#[test]
fn a_pending_execution_is_cancelled_before_it_starts() {
    let env = Env::new();
    let id = env.enqueue(&["echo"]).to_string();
    let out = env.ok(&["exec", "cancel", &id]);
    assert!(out.contains("cancelled before it started"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["exec", "show", &id, "--json"])).unwrap();
    assert_eq!(json["status"], "cancelled");
    assert_eq!(json["cancel_outcome"], "before-start");
    assert_bad_input(env.cli(&["exec", "cancel", &id]), "already ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_exits_0_on_success_and_1_on_failure_and_follows_retries() {
    let env = Env::with_test_builtins();
    let serve = env.serve(&[]);
    let out = env.cli(&["run", "echo", "--payload", r#"{"x":1}"#, "--wait"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded"));

    let out = env.cli(&[
        "run",
        "fail",
        "--retries",
        "2",
        "--backoff",
        "10ms",
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let last: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["attempt"], 3);
    assert_eq!(last["status"], "failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("retrying as").count(), 2, "{stderr}");
    // Each attempt is its own row, linked to the one before.
    let store = env.store().await;
    let chain = runs_of(store.as_ref(), "fail").await;
    assert_eq!(chain.len(), 3);
    for (i, e) in chain.iter().enumerate() {
        assert_eq!(e.attempt as usize, i + 1);
        assert_eq!(e.status, Status::Failed);
        if i > 0 {
            assert_eq!(e.previous_id, Some(chain[i - 1].id));
            assert_eq!(chain[i - 1].next_id, Some(e.id));
        }
    }

    // retry: false is honoured even with attempts left.
    let out = env.cli(&[
        "run",
        "fail",
        "--payload",
        r#"{"retry":false,"message":"bad input"}"#,
        "--retries",
        "3",
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (e["attempt"].as_u64(), e["next_id"].is_null()),
        (Some(1), true)
    );
    assert_eq!(e["error"], "bad input");

    // A panicking inproc handler fails its execution, not the supervisor.
    let out = env.cli(&[
        "run",
        "panic",
        "--payload",
        r#"{"message":"boom"}"#,
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"], "panicked: boom");
    assert!(alive(serve.pid()));
    assert_eq!(env.cli(&["run", "noop", "--wait"]).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_show_and_logs_give_the_documented_json() {
    let env = Env::new();
    let _serve = env.serve(&[]);
    for mode in ["inproc", "process"] {
        let out = env.cli(&[
            "run",
            "progress",
            "--mode",
            mode,
            "--payload",
            r#"{"steps":4,"delay_ms":1}"#,
            "--wait",
            "--json",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = e["id"].as_str().unwrap().to_string();
        let shown: serde_json::Value =
            serde_json::from_str(&env.ok(&["exec", "show", &id, "--json"])).unwrap();
        for key in [
            "id",
            "status",
            "attempt",
            "progress",
            "output",
            "error",
            "exit_code",
            "signal",
            "pid",
            "started_at",
            "finished_at",
        ] {
            assert!(
                shown.get(key).is_some(),
                "{mode}: exec show --json lacks {key}: {shown}"
            );
        }
        assert_eq!(shown["progress"]["percent"], 100.0);
        assert_eq!(shown["progress"]["done"], 4);
        assert_eq!(shown["progress"]["total"], 4);
        assert_eq!(shown["progress"]["message"], "step 4 of 4");
        assert_eq!(shown["mode"], mode);

        let out = env.cli(&[
            "run",
            "logs",
            "--mode",
            mode,
            "--payload",
            r#"{"count":14,"level":"all"}"#,
            "--wait",
            "--json",
        ]);
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = e["id"].as_str().unwrap().to_string();
        let logs = env.ok(&["exec", "logs", &id, "--json"]);
        let lines: Vec<serde_json::Value> = logs
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|l: &serde_json::Value| l["stream"] == "log")
            .collect();
        assert_eq!(lines.len(), 14, "{mode}: {logs}");
        for l in &lines {
            for key in ["seq", "ts", "level", "stream", "message", "fields"] {
                assert!(l.get(key).is_some(), "{mode}: log line lacks {key}: {l}");
            }
        }
        let errors_up = env.ok(&["exec", "logs", &id, "--json", "--level", "error"]);
        let levels: Vec<String> = errors_up
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["level"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            levels,
            ["error", "fatal", "panic", "error", "fatal", "panic"],
            "{mode}"
        );
        // Human output works too.
        assert!(env.ok(&["exec", "logs", &id]).contains("WARN"));
        // The list shows the id by its last 8 hex digits.
        assert!(env.ok(&["exec", "list"]).contains(&id[id.len() - 8..]));
        assert!(env.ok(&["exec", "show", &id]).contains("succeeded"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_logs_follow_streams_until_the_execution_ends() {
    let env = Env::new();
    env.ok(&[
        "handler",
        "add",
        "slow",
        "--exec",
        "/bin/sh",
        "--arg",
        "-c",
        "--arg",
        "for i in 1 2 3 4 5; do echo \"line $i\"; sleep 0.2; done",
    ]);
    let _serve = env.serve(&[]);
    let id = env.enqueue(&["slow"]);
    let out = env.ok(&["exec", "logs", &id.to_string(), "--follow"]);
    // Following ends only once the execution has ended, with every line.
    let store = env.store().await;
    let e = store.execution(id).await.unwrap().unwrap();
    assert_eq!(e.status, Status::Succeeded, "{e:?}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("[stdout] line"))
        .collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[4].ends_with("line 5"), "{out}");
}

#[test]
fn exit_codes_are_0_ok_1_job_failed_2_bad_input_3_runtime_failure() {
    let env = Env::bare();
    // 3: no command but `serve` and `migrate` creates a database, and the
    // error says where the service's is.
    for args in [
        vec!["job", "list"],
        vec!["exec", "list"],
        vec!["exec", "show", "0195b6e4-0000-7000-8000-000000000000"],
        vec!["stats"],
        vec!["handler", "list"],
        vec!["queue", "list"],
        vec!["run", "echo"],
        vec!["job", "add", "j", "--handler", "echo", "--every", "1h"],
        vec!["handler", "add", "h", "--exec", "/bin/true"],
        vec!["queue", "pause", "q"],
    ] {
        let out = env.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        assert!(stderr.contains("no database at"), "{stderr}");
        assert!(stderr.contains("/etc/jobvisor/jobvisor.toml"), "{stderr}");
        assert!(
            !env.path("jobvisor.db").exists(),
            "{args:?} created a database"
        );
    }
    env.ok(&["migrate"]);
    // 2: bad input, database or not.
    assert_bad_input(
        env.cli(&[
            "job",
            "add",
            "x",
            "--handler",
            "noop",
            "--cron",
            "0 9 * * 8",
        ]),
        "day of week",
    );
    assert_bad_input(
        cli_at("redis://db/x", &["exec", "list"]),
        "unsupported database URL",
    );
    // 0: once a database exists, reading it succeeds.
    env.ok(&["job", "add", "x", "--handler", "noop", "--every", "1h"]);
    assert!(env.ok(&["job", "list"]).contains("every 1h"));
    // 1: the job failed.
    let _serve = env.serve(&[]);
    assert_eq!(env.cli(&["run", "fail", "--wait"]).status.code(), Some(1));
    // --help says all of this.
    let help = env.ok(&["--help"]);
    assert!(help.contains("3 runtime failure"), "{help}");
}

/// Without --database, the CLI uses the service's database: `database` in
/// the config file that $JOBVISOR_CONFIG names, whatever the directory it
/// runs in; it creates nothing there.
#[test]
fn the_cli_uses_the_database_of_the_services_config_file() {
    let env = Env::new();
    let config = env.path("jobvisor.toml");
    std::fs::write(
        &config,
        format!("database = {:?}\nconcurrency = 2\n", env.db),
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        Command::new(jobvisor_bin())
            .args(args)
            .current_dir(elsewhere.path())
            .env_remove("JOBVISOR_DATABASE")
            .env("JOBVISOR_CONFIG", &config)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = cli(&["run", "echo", "--payload", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(env.ok(&["exec", "list"]).contains(&id[id.len() - 8..]));
    assert!(!elsewhere.path().join("jobvisor.db").exists());
    // --help names where it looks.
    let help = String::from_utf8_lossy(&cli(&["--help"]).stdout).to_string();
    assert!(
        help.contains("JOBVISOR_CONFIG") && help.contains("postgres://"),
        "{help}"
    );
}

#[test]
fn an_unreachable_postgresql_fails_within_five_seconds_naming_the_cause() {
    // Nothing listens: refused at once.
    let start = std::time::Instant::now();
    let out = cli_at("postgres://u:p@127.0.0.1:1/db", &["exec", "list"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(":p@"),
        "the password leaked"
    );
    assert_runtime_failure(out, "Connection refused");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // Something accepts the connection and never answers: 5 s, then said.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://u:p@{}/db", silent.local_addr().unwrap());
    let start = std::time::Instant::now();
    assert_runtime_failure(cli_at(&url, &["run", "noop"]), "no answer within 5 s");
    let took = start.elapsed();
    assert!(
        (std::time::Duration::from_secs(4)..std::time::Duration::from_secs(15)).contains(&took),
        "{took:?}"
    );
}

#[test]
fn serve_help_shows_the_defaults_of_config_service() {
    let env = Env::new();
    let help = env.ok(&["serve", "--help"]);
    let c = jobvisor::supervisor::Config::service();
    for want in [
        format!("[default: {}]", c.concurrency),
        format!("[default: {}]", humantime::format_duration(c.poll_interval)),
        format!("[default: {}]", humantime::format_duration(c.node_lease)),
        format!("[default: {}]", humantime::format_duration(c.drain_timeout)),
    ] {
        assert!(help.contains(&want), "{want} missing from:\n{help}");
    }
}

/// `run --unique-key`: a duplicate creates nothing, prints the holder's id,
/// says `duplicate of ID` on stderr and exits 0; `--json` says so too; a
/// different key, or `--unique-for` without a key, behave as documented.
#[test]
fn a_duplicate_unique_key_prints_the_holder_and_exits_0() {
    let env = Env::new();
    let first = env.enqueue(&["noop", "--unique-key", "nightly-report"]);
    let out = env.cli(&["run", "noop", "--unique-key", "nightly-report"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        first.to_string()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("duplicate of {first}")
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["run", "noop", "--unique-key", "nightly-report", "--json"]))
            .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": first.to_string(), "duplicate": true})
    );
    let other = env.enqueue(&["noop", "--unique-key", "weekly-report"]);
    assert_ne!(other, first);
    let out = env.cli(&["run", "noop", "--unique-for", "1h"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--unique-for needs --unique-key"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["exec", "list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

/// `run --unique-key KEY --replace` on an execution that has not started
/// replaces its payload (debounce) and names it; `--replace` needs a key.
#[test]
fn replace_debounces_a_pending_execution() {
    let env = Env::new();
    let first = env.enqueue(&["echo", "--payload", "1", "--unique-key", "k", "--replace"]);
    let out = env.cli(&[
        "run",
        "echo",
        "--payload",
        "2",
        "--unique-key",
        "k",
        "--replace",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": first.to_string(), "duplicate": true, "replaced": true})
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("replaced the payload of {first}")
    );
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["exec", "show", &first.to_string(), "--json"])).unwrap();
    assert_eq!(shown["payload"], 2);
    assert_eq!(
        env.cli(&["run", "echo", "--replace"]).status.code(),
        Some(2)
    );
}

/// `exec list` filters and pages; `exec retry ID`; bulk `exec cancel` and
/// `exec retry` by filters, with `--dry-run`; the refusals exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_found_by_filters_and_acted_on_in_bulk() {
    let env = Env::new();
    let mut failed = Vec::new();
    for _ in 0..3 {
        failed.push(env.enqueue(&["fail", "--queue", "batch"]));
    }
    for _ in 0..4 {
        env.enqueue(&["noop"]);
    }
    let serve = env.serve(&[]);
    let store = env.store().await;
    for id in &failed {
        finished(store.as_ref(), *id).await;
    }
    let list = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["exec", "list", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&env.ok(&all)).unwrap()
    };
    assert_eq!(list(&["--queue", "batch"]).len(), 3);
    assert_eq!(list(&["--status", "failed", "--handler", "fail"]).len(), 3);
    assert_eq!(
        list(&["--status", "failed", "--status", "succeeded"]).len(),
        7
    );
    let noops = list(&["--handler", "noop", "--since", "1h"]);
    assert_eq!(noops.len(), 4);
    // Ad-hoc runs belong to no job, even one named like their handler.
    assert!(noops.iter().all(|e| e["job"].is_null()), "{noops:?}");
    assert!(list(&["--job", "noop"]).is_empty());
    assert!(list(&["--until", "2000-01-01T00:00:00Z"]).is_empty());
    // Pages: newest first, the next page after the last id.
    let first = list(&["--limit", "4"]);
    let last = first[3]["id"].as_str().unwrap();
    let second = list(&["--limit", "4", "--before", last]);
    assert_eq!(second.len(), 3);
    assert!(second[0]["id"].as_str().unwrap() < last);
    // --jsonl: one object per line.
    let lines = env.ok(&["exec", "list", "--jsonl", "--queue", "batch"]);
    assert_eq!(lines.lines().count(), 3);
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["queue"], "batch");
    }
    let table = env.ok(&["exec", "list", "--queue", "batch"]);
    assert!(table.lines().next().unwrap().contains("QUEUE"), "{table}");

    // Retry one: a new attempt of the same root, printed.
    let out = env.ok(&["exec", "retry", &failed[0].to_string()]);
    let again = uuid::Uuid::parse_str(out.trim()).unwrap();
    let e = finished(store.as_ref(), again).await;
    assert_eq!((e.attempt, e.previous_id), (2, Some(failed[0])));
    for (args, needle) in [
        (
            vec!["exec", "retry", &*failed[0].to_string()],
            "was retried already",
        ),
        (vec!["exec", "retry"], "at least one filter"),
        (vec!["exec", "cancel"], "at least one filter"),
        (
            vec!["exec", "retry", &*failed[1].to_string(), "--queue", "batch"],
            "not both",
        ),
    ] {
        let out = env.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let ok = list(&["--status", "succeeded", "--limit", "1"]);
    let out = env.cli(&["exec", "retry", ok[0]["id"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to retry"));

    // Bulk retry, dry run first: nothing changes.
    let dry = env.ok(&[
        "exec",
        "retry",
        "--status",
        "failed",
        "--queue",
        "batch",
        "--dry-run",
    ]);
    // It says exactly what the retry below then does.
    assert!(
        dry.contains("matched 4 executions: 3 would be retried (dry run: nothing changed)"),
        "{dry}"
    );
    assert_eq!(list(&["--queue", "batch"]).len(), 4);
    let out = env.ok(&["exec", "retry", "--status", "failed", "--queue", "batch"]);
    // Four failed attempts match; the first root's was retried already.
    assert!(out.contains("matched 4 executions: 3 retried"), "{out}");
    eventually("the bulk retries to end", || async {
        let all = list(&["--queue", "batch"]);
        (all.len() == 7 && all.iter().all(|e| e["status"] == "failed")).then_some(())
    })
    .await;

    // Bulk cancel by queue, with a sleeper running and two pending behind it.
    drop(serve);
    let sleeping = env.enqueue(&["sleep", "--payload", r#"{"ms":60000}"#, "--queue", "hold"]);
    let _serve = env.serve(&["--concurrency", "1"]);
    running(store.as_ref(), sleeping).await;
    env.enqueue(&["noop", "--queue", "hold"]);
    env.enqueue(&["noop", "--queue", "hold"]);
    let out = env.ok(&["exec", "cancel", "--queue", "hold", "--reason", "clearing"]);
    assert!(
        out.contains(
            "matched 3 executions: 2 cancelled before they started, 1 running asked to stop"
        ),
        "{out}"
    );
    let e = finished(store.as_ref(), sleeping).await;
    assert_eq!(e.status, Status::Cancelled);
    assert_eq!(e.cancel_reason.as_deref(), Some("clearing"));
}

/// `handler remove` refuses while jobs use the handler, naming them;
/// `--force` removes it and pauses them. A built-in of the same name takes
/// over, so removing that override needs no force.
#[test]
fn a_handler_in_use_is_not_removed_without_force() {
    let env = Env::new();
    env.ok(&["handler", "add", "tool", "--exec", "/bin/true"]);
    for job in ["nightly", "hourly"] {
        env.ok(&["job", "add", job, "--handler", "tool", "--every", "1h"]);
    }
    let out = env.cli(&["handler", "remove", "tool"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("used by jobs hourly, nightly"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1);
    assert!(env.ok(&["handler", "list"]).contains("tool"));
    let out = env.ok(&["handler", "remove", "tool", "--force"]);
    assert!(
        out.contains("paused the jobs that used it: hourly, nightly"),
        "{out}"
    );
    let jobs: serde_json::Value =
        serde_json::from_str(&env.ok(&["job", "list", "--json"])).unwrap();
    assert!(
        jobs.as_array().unwrap().iter().all(|j| j["paused"] == true),
        "{jobs}"
    );
    // An override of a built-in: the built-in takes over.
    env.ok(&["handler", "add", "echo", "--exec", "/bin/cat"]);
    env.ok(&["job", "add", "echoes", "--handler", "echo", "--every", "1h"]);
    env.ok(&["handler", "remove", "echo"]);
    assert_eq!(
        env.cli(&["handler", "remove", "nope"]).status.code(),
        Some(2)
    );
}

/// `job list` counts every run in a job's history, triggered ones too
/// (`run_count`; `runs` counts scheduled occurrences).
#[test]
fn job_list_counts_triggered_runs() {
    let env = Env::new();
    env.ok(&["job", "add", "report", "--handler", "noop", "--at", "+1d"]);
    env.ok(&["job", "trigger", "report"]);
    env.ok(&["job", "trigger", "report"]);
    let jobs: serde_json::Value =
        serde_json::from_str(&env.ok(&["job", "list", "--json"])).unwrap();
    assert_eq!(jobs[0]["run_count"], 2, "{jobs}");
    assert_eq!(jobs[0]["runs"], 0, "{jobs}");
    let table = env.ok(&["job", "list"]);
    let row = table.lines().find(|l| l.starts_with("report")).unwrap();
    assert!(row.trim_end().ends_with(" 2"), "{table}");
}

/// `queue set-key-limit` and `queue set-rate` set what `queue list` shows;
/// bad values are one line and exit 2, with nothing written.
#[test]
fn queue_key_limits_and_rates_are_set_listed_and_bad_ones_refused() {
    let env = Env::new();
    let show = |name: &str| -> serde_json::Value {
        let all: Vec<serde_json::Value> =
            serde_json::from_str(&env.ok(&["queue", "list", "--json"])).unwrap();
        all.into_iter().find(|q| q["name"] == name).unwrap()
    };
    env.ok(&["queue", "set-key-limit", "mail", "2"]);
    let said = env.ok(&["queue", "set-rate", "mail", "100/1m"]);
    assert!(said.contains("at most 100 started in any 1m"), "{said}");
    let q = show("mail");
    assert_eq!(
        (&q["key_limit"], &q["rate"], &q["tokens"], &q["max_running"]),
        (
            &2.into(),
            &"100/1m".into(),
            &100.into(),
            &serde_json::Value::Null
        )
    );
    let table = env.ok(&["queue", "list"]);
    let header = table.lines().next().unwrap();
    for col in ["LIMIT", "KEY LIMIT", "RATE", "TOKENS", "RUNNING", "PENDING"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("mail") && l.contains("100/1m")),
        "{table}"
    );
    for bad in ["0/1s", "5/0s", "5", "-1/1s", "x/1s", "5/soon", "1.5/1s"] {
        assert_bad_input(env.cli(&["queue", "set-rate", "mail", bad]), "invalid rate");
    }
    for bad in ["0", "-1", "two", "1.5"] {
        assert_bad_input(
            env.cli(&["queue", "set-key-limit", "mail", bad]),
            "invalid limit",
        );
        assert_bad_input(
            env.cli(&["queue", "set-limit", "mail", bad]),
            "invalid limit",
        );
    }
    let q = show("mail");
    assert_eq!((&q["key_limit"], &q["rate"]), (&2.into(), &"100/1m".into()));
    env.ok(&["queue", "set-rate", "mail", "none"]);
    env.ok(&["queue", "set-key-limit", "mail", "none"]);
    let q = show("mail");
    assert!(q["key_limit"].is_null() && q["rate"].is_null() && q["tokens"].is_null());
    // A run and a job carry a concurrency key; exec list finds it.
    let id = env.enqueue(&["noop", "--queue", "mail", "--concurrency-key", "customer-7"]);
    let found: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&[
        "exec",
        "list",
        "--concurrency-key",
        "customer-7",
        "--json",
    ]))
    .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id.to_string());
    assert_eq!(found[0]["concurrency_key"], "customer-7");
    env.ok(&[
        "job",
        "add",
        "digest",
        "--handler",
        "noop",
        "--every",
        "1h",
        "--concurrency-key",
        "c1",
    ]);
    let job: serde_json::Value =
        serde_json::from_str(&env.ok(&["job", "show", "digest", "--json"])).unwrap();
    assert_eq!(job["concurrency_key"], "c1");
}

/// An ad-hoc run belongs to no job: a job added later under the handler's
/// name starts with no history.
#[test]
fn an_ad_hoc_run_is_no_jobs_history() {
    let env = Env::new();
    let adhoc = env.enqueue(&["echo"]);
    env.ok(&[
        "job",
        "add",
        "echo",
        "--handler",
        "echo",
        "--every",
        "1h",
        "--paused",
    ]);
    let listed = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["exec", "list", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&env.ok(&all)).unwrap()
    };
    assert!(listed(&["--job", "echo"]).is_empty());
    let all = listed(&[]);
    assert_eq!(all[0]["id"], adhoc.to_string());
    assert!(all[0]["job"].is_null());
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["job", "show", "echo", "--json"])).unwrap();
    assert!(show["recent"].as_array().unwrap().is_empty(), "{show}");
    let jobs: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["job", "list", "--json"])).unwrap();
    assert_eq!(jobs[0]["run_count"], 0);
    // A trigger is the job's.
    let run = env.ok(&["job", "trigger", "echo"]);
    let mine = listed(&["--job", "echo"]);
    assert_eq!(mine.len(), 1, "{run}");
    // The table's JOB column is empty for the ad-hoc run.
    let table = env.ok(&["exec", "list"]);
    let line = table
        .lines()
        .find(|l| l.starts_with(&adhoc.simple().to_string()[24..]))
        .unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[2], "echo", "JOB empty, then HANDLER: {line}");
    assert_eq!(
        env.ok(&["exec", "show", &adhoc.to_string()])
            .lines()
            .find(|l| l.starts_with("job:"))
            .unwrap(),
        "job:         - (ad-hoc run)"
    );
}

/// `job add --replace` changes a job in place: its history, counts and
/// anchor stay; without the flag a taken name is refused.
#[test]
fn job_add_replace_changes_a_job_in_place() {
    let env = Env::new();
    env.ok(&[
        "job",
        "add",
        "tick",
        "--handler",
        "noop",
        "--every",
        "1h",
        "--start",
        "2030-01-01T00:30:00Z",
        "--paused",
    ]);
    env.ok(&["job", "trigger", "tick"]);
    let before: serde_json::Value =
        serde_json::from_str(&env.ok(&["job", "show", "tick", "--json"])).unwrap();
    assert_bad_input(
        env.cli(&["job", "add", "tick", "--handler", "echo", "--every", "1h"]),
        "already exists",
    );
    let said = env.ok(&[
        "job",
        "add",
        "tick",
        "--handler",
        "echo",
        "--every",
        "1h",
        "--payload",
        r#"{"v":2}"#,
        "--replace",
    ]);
    assert!(
        said.starts_with("job tick replaced; next run 2030-01-01T00:30:00"),
        "{said}"
    );
    let after: serde_json::Value =
        serde_json::from_str(&env.ok(&["job", "show", "tick", "--json"])).unwrap();
    assert_eq!(after["handler"], "echo");
    assert_eq!(after["payload"], serde_json::json!({"v": 2}));
    assert_eq!(after["schedule"], before["schedule"], "the anchor stays");
    assert_eq!(after["state"], "paused", "a paused job stays paused");
    assert_eq!(
        after["recent"].as_array().unwrap().len(),
        1,
        "its history stays"
    );
    assert_eq!(after["recent"], before["recent"]);
    // An explicit start moves the anchor.
    let said = env.ok(&[
        "job",
        "add",
        "tick",
        "--handler",
        "echo",
        "--every",
        "1h",
        "--start",
        "2031-01-01T00:00:00Z",
        "--replace",
    ]);
    assert!(said.contains("next run 2031-01-01T00:00:00"), "{said}");
    assert_bad_input(
        env.cli(&["job", "add", "nosuch", "--handler", "echo", "--replace"]),
        "no job named \"nosuch\" to replace",
    );
}

/// `bench` (the modes scenario) runs every mode end to end at small sizes,
/// and each row holds its figures against its mode's baseline of the same
/// runs: the bare batched SQL loop for inproc, bare spawns for process,
/// pipes to reused workers for pooled.
#[test]
fn the_modes_bench_holds_each_mode_against_its_baseline() {
    let env = Env::new();
    let out = env.ok(&[
        "bench",
        "--count",
        "600",
        "--process-count",
        "12",
        "--latency-samples",
        "4",
        "--repeat",
        "3",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(r["cores"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["repeat"], 3);
    assert_eq!(r["settings"]["backend"], "sqlite");
    assert_eq!(r["settings"]["count"], 600);
    let rows = r["rows"].as_array().unwrap();
    let kinds: Vec<(String, String)> = rows
        .iter()
        .map(|row| {
            (
                row["mode"].as_str().unwrap().to_string(),
                row["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pair = |m: &str, k: &str| (m.to_string(), k.to_string());
    assert_eq!(
        kinds,
        [
            pair("inproc", "baseline"),
            pair("inproc", "reference"),
            pair("inproc", "supervised"),
            pair("process", "baseline"),
            pair("process", "supervised"),
            pair("pooled", "baseline"),
            pair("pooled", "supervised"),
        ],
        "{r}"
    );
    assert!(rows[0]["name"]
        .as_str()
        .unwrap()
        .contains("bare batched SQL loop"));
    assert_eq!(rows[0]["backend"], "sqlite");
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for row in rows {
        let runs: Vec<f64> = row["runs_jobs_per_sec"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(runs.len(), 3, "{row}");
        assert!(runs.iter().all(|x| *x > 0.0), "{row}");
        let jobs = row["jobs_per_sec"].as_f64().unwrap();
        assert_eq!(jobs, median(&runs), "the median of the runs: {row}");
        let base_row = rows
            .iter()
            .find(|b| b["mode"] == row["mode"] && b["kind"] == "baseline")
            .unwrap();
        assert_eq!(
            row["baseline_jobs_per_sec"], base_row["jobs_per_sec"],
            "{row}"
        );
        let ratio = row["ratio"].as_f64().unwrap();
        assert!(ratio > 0.0, "{row}");
        if row["kind"] == "baseline" {
            assert_eq!(ratio, 1.0, "{row}");
        }
    }
    // Bad settings are a one-line error with exit code 2.
    let bad = env.cli(&["bench", "--repeat", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `bench --scenario relay` stores every line a child writes, one child and
/// several at once, and says how fast.
#[test]
fn the_relay_bench_stores_every_line() {
    let env = Env::new();
    let out = env.ok(&[
        "bench",
        "--scenario",
        "relay",
        "--lines",
        "3000",
        "--children",
        "3",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{r}");
    for (row, children) in rows.iter().zip([1, 3]) {
        assert_eq!(row["children"], children, "{row}");
        assert_eq!(row["lines_stored"], 3000 * children, "{row}");
        assert_eq!(row["lines_lost"], 0, "{row}");
        assert!(row["lines_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["peak_rss_mib"].as_f64().unwrap() > 0.0, "{row}");
    }
    let bad = env.cli(&["bench", "--scenario", "relay", "--lines", "0"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// `jobvisor bench ARGS --json` with no `--database` (the scenarios that
/// start their own `serve` make their own databases); its document.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(jobvisor_bin())
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("JOBVISOR_WORKER", worker_bin())
        .env_remove("JOBVISOR_DATABASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `bench --scenario isolation` runs every misbehaviour in every mode under
/// a real `jobvisor serve` and reports what each mode contains. The process
/// modes contain every fault but one (a pooled worker is reused, so what a
/// handler leaks in it stays there); in-process, what kills a process kills
/// the supervisor, which is rescued after a restart, and what leaks stays in
/// the supervisor.
#[test]
fn the_isolation_matrix_shows_what_each_mode_contains() {
    let r = bench_json(&["--scenario", "isolation"]);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 30, "ten faults in three modes: {r}");
    let cell = |what: &str, mode: &str| {
        rows.iter()
            .find(|row| row["misbehaviour"] == what && row["mode"] == mode)
            .unwrap_or_else(|| panic!("no cell {what}/{mode}"))
    };
    for row in rows {
        let (what, mode) = (
            row["misbehaviour"].as_str().unwrap(),
            row["mode"].as_str().unwrap(),
        );
        let leaks_into_a_reused_worker = mode == "pooled" && what == "fds";
        let contained = match mode {
            "inproc" => ["panic", "loop", "stdin"].contains(&what),
            _ => !leaks_into_a_reused_worker,
        };
        assert_eq!(row["contained"], contained, "{what} in {mode}: {row:#}");
        assert_eq!(
            row["not_contained"].as_array().unwrap().is_empty(),
            contained,
            "{row:#}"
        );
        // (A runtime thread blocked in-process may hold up tasks queued
        // on it: what happens to the others there is measured, not held.)
        if row["supervisor_survived"] == true && !(what == "block" && mode == "inproc") {
            assert_eq!(
                row["others_succeeded"], row["others_total"],
                "the other executions kept succeeding: {row:#}"
            );
        }
        if contained {
            assert!(row["detect_ms"].as_f64().is_some(), "{row:#}");
            assert!(row["cleanup_ms"].as_f64().unwrap() < 5000.0, "{row:#}");
            assert_eq!(row["left_behind"], 0, "{row:#}");
            assert_eq!(row["supervisor_stdout_bytes"], 0, "{row:#}");
        }
    }
    // What kills a process kills the in-process supervisor; started again,
    // it rescues the lost execution.
    for what in ["abort", "segfault", "oom"] {
        let row = cell(what, "inproc");
        assert_eq!(row["supervisor_survived"], false, "{row:#}");
        assert!(row["rescued_ms"].as_f64().is_some(), "{row:#}");
    }
    assert!(cell("abort", "inproc")["supervisor_exit"]
        .as_str()
        .unwrap()
        .contains("SIGABRT"));
    assert!(cell("segfault", "inproc")["supervisor_exit"]
        .as_str()
        .unwrap()
        .contains("SIGSEGV"));
    // In a process, the same faults end only the execution, and say how.
    for (what, signal) in [("abort", "SIGABRT"), ("segfault", "SIGSEGV")] {
        for mode in ["process", "pooled"] {
            let row = cell(what, mode);
            assert_eq!(row["status"], "failed", "{row:#}");
            assert!(row["error"].as_str().unwrap().contains(signal), "{row:#}");
        }
    }
    for mode in ["process", "pooled"] {
        for what in ["loop", "block", "stdin"] {
            let row = cell(what, mode);
            assert!(
                row["error"].as_str().unwrap().contains("timed out"),
                "{row:#}"
            );
        }
    }
    // Leaks stay where they were made.
    assert!(cell("fds", "inproc")["fds_delta"].as_i64().unwrap() >= 1000);
    assert!(cell("fds", "pooled")["fds_delta"].as_i64().unwrap() >= 1000);
    assert_eq!(cell("grandchild", "inproc")["left_behind"], 1);
    assert!(
        cell("flood", "inproc")["supervisor_stdout_bytes"]
            .as_u64()
            .unwrap()
            >= 64 << 20
    );
    // A runtime blocked in-process is never taken back: its end is never
    // recorded, though the supervisor's other thread runs the rest.
    let block = cell("block", "inproc");
    assert_eq!(block["supervisor_survived"], true, "{block:#}");
    assert_eq!(block["status"], "running", "{block:#}");
}

/// `bench --scenario wakeup` times another process's enqueue to a real
/// `serve`'s start against an in-process wake-up.
#[test]
fn the_wakeup_bench_times_a_real_serve_against_an_in_process_wake() {
    let r = bench_json(&["--scenario", "wakeup", "--latency-samples", "5"]);
    assert_eq!(r["backend"], "sqlite");
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{r}");
    assert_eq!(rows[0]["kind"], "reference");
    assert_eq!(rows[0]["ratio"], 1.0);
    assert_eq!(rows[1]["kind"], "measured");
    for row in rows {
        assert_eq!(row["samples"], 5, "{row}");
        assert!(row["start_p50_ms"].as_f64().unwrap() > 0.0, "{row}");
    }
}

/// `bench --scenario transactions` drains runs that insert a row apart
/// from their success and in its commit, against no-ops; each case's rows
/// are all there (the bench checks them and fails otherwise).
#[test]
fn the_transactions_bench_measures_effects_in_and_apart_from_the_runs_commit() {
    let r = bench_json(&[
        "--scenario",
        "transactions",
        "--count",
        "60",
        "--repeat",
        "2",
    ]);
    assert_eq!(r["backend"], "sqlite");
    assert_eq!(r["count"], 60);
    for field in [
        "noop_per_sec",
        "separate_per_sec",
        "transaction_per_sec",
        "separate_ratios",
        "transaction_ratios",
    ] {
        let v = r[field].as_array().unwrap();
        assert_eq!(v.len(), 2, "{field}: {r}");
        assert!(v.iter().all(|x| x.as_f64().unwrap() > 0.0), "{field}: {r}");
    }
}

/// `bench --scenario webhooks` drains no-ops with and without a webhook,
/// posting nothing for a webhook on `failed`, and delivers every success
/// to its receiver.
#[test]
fn the_webhooks_bench_measures_the_cost_and_every_delivery_arrives() {
    let r = bench_json(&[
        "--scenario",
        "webhooks",
        "--count",
        "300",
        "--process-count",
        "200",
        "--repeat",
        "2",
    ]);
    assert_eq!(r["backend"], "sqlite");
    assert_eq!(r["cost_ratios"].as_array().unwrap().len(), 2, "{r}");
    for v in r["with_jobs_per_sec"]
        .as_array()
        .unwrap()
        .iter()
        .chain(r["without_jobs_per_sec"].as_array().unwrap())
    {
        assert!(v.as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(r["deliveries"], 200);
    assert!(r["deliveries_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["bare_posts_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["end_to_post_p50_ms"].as_f64().unwrap() > 0.0, "{r}");
}

/// `bench --scenario abuse` drives a real `serve` with each abusive load
/// and measures it from outside; the service survives all three, and what
/// it holds stays bounded (loose bounds: a debug build on a shared
/// machine; the goals are for release builds and are in the README).
#[test]
fn the_abuse_bench_measures_a_real_serve_under_each_load() {
    let r = bench_json(&["--scenario", "abuse"]);
    assert_eq!(r["backend"], "sqlite");
    assert_eq!(r["idle_streams"], 500, "{r}");
    let rest = r["rest_rss_mib"].as_f64().unwrap();
    assert!(rest > 1.0, "{r}");
    // A page of 100 rows is cut to a few KiB a row, not 90 MB.
    let page = r["list_page_bytes"].as_u64().unwrap();
    assert!(page > 100 * 4096 && page < 100 * 8192, "{r}");
    assert!(r["list_pages_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    for key in ["list_peak_rss_mib", "follow_peak_rss_mib"] {
        let peak = r[key].as_f64().unwrap();
        assert!(peak >= rest * 0.5 && peak < 400.0, "{key}: {r}");
    }
    let cpu = r["idle_streams_cpu_pct"].as_f64().unwrap();
    assert!((0.0..25.0).contains(&cpu), "{r}");
}

/// `bench --scenario peers` needs PostgreSQL (graphile-worker runs on
/// nothing else): without `--database postgres://...` it says so in one
/// line and exits 0, running nothing.
#[test]
fn the_peers_bench_without_postgresql_says_why_it_runs_nothing() {
    let out = Command::new(jobvisor_bin())
        .args(["bench", "--scenario", "peers"])
        .env_remove("JOBVISOR_DATABASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.trim(),
        "peers: skipped: needs --database postgres://... (graphile-worker runs on PostgreSQL only)"
    );
}

/// `bench --scenario peers` on PostgreSQL installs graphile-worker with
/// npm, drains the same no-ops with each in turns, and reports every drain
/// and the ratio (loose bounds: a debug build, a shared machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_bench_drains_the_same_work_with_jobvisor_and_graphile_worker_in_turns() {
    let Some(url) = pg_database().await else {
        return;
    };
    let on_path = |tool: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file())
    };
    assert!(
        on_path("node") && on_path("npm"),
        "node and npm are needed for the peers bench (apt-get install nodejs npm)"
    );
    let r = tokio::task::spawn_blocking(move || {
        bench_json(&["--scenario", "peers", "--count", "2000", "--database", &url])
    })
    .await
    .unwrap();
    assert_eq!(r["jobs"], 2000, "{r}");
    let drains = r["drains"].as_array().unwrap();
    let systems: Vec<&str> = drains
        .iter()
        .map(|d| d["system"].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        ["graphile-worker", "jobvisor", "graphile-worker", "jobvisor"],
        "{r}"
    );
    for d in drains {
        let ms = d["drain_ms"].as_f64().unwrap();
        assert!(ms > 0.0 && ms < 120_000.0, "{d}");
        let per_s = d["per_s"].as_f64().unwrap();
        assert!((per_s - 2000.0 / (ms / 1000.0)).abs() < 1.0, "{d}");
        // Both the server and each worker process did the work, and it
        // was counted: CPU per job, above nothing and below a second.
        for side in ["server_cpu_us", "worker_cpu_us"] {
            let us = d[side].as_f64().unwrap();
            assert!(us > 0.0 && us < 1e6, "{side}: {d}");
        }
    }
    let ratio = r["ratio"].as_f64().unwrap();
    let expected = r["jobvisor_per_s"].as_f64().unwrap() / r["graphile_per_s"].as_f64().unwrap();
    assert!(ratio > 0.0 && (ratio - expected).abs() < 1e-9, "{r}");
}

/// On MariaDB, `bench --modes inproc` runs jobvisor against a bare loop in
/// MySQL's own SQL on the same database, and the wake-up scenario times a
/// `serve` woken by the notices poll; both say `mysql`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modes_and_wakeup_benches_run_on_mysql() {
    let Some(url) = mysql_database().await else {
        return;
    };
    let r = tokio::task::spawn_blocking(move || {
        let modes = bench_json(&[
            "--modes",
            "inproc",
            "--count",
            "300",
            "--latency-samples",
            "3",
            "--database",
            &url,
        ]);
        let wakeup = bench_json(&[
            "--scenario",
            "wakeup",
            "--latency-samples",
            "5",
            "--database",
            &url,
        ]);
        (modes, wakeup)
    })
    .await
    .unwrap();
    let (modes, wakeup) = r;
    let rows = modes["rows"].as_array().unwrap();
    assert_eq!(
        rows[0]["name"], "baseline: bare batched SQL loop",
        "{modes}"
    );
    for row in rows {
        // The tokio::spawn reference touches no database.
        let db = if row["kind"] == "reference" {
            "none"
        } else {
            "mysql"
        };
        assert_eq!(row["backend"], db, "{row}");
        assert_eq!(row["executions"], 300, "{row}");
        assert!(row["jobs_per_sec"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert!(rows.iter().any(|r| r["kind"] == "supervised"), "{modes}");
    assert_eq!(wakeup["backend"], "mysql", "{wakeup}");
    for row in wakeup["rows"].as_array().unwrap() {
        assert_eq!(row["samples"], 5, "{row}");
        assert!(row["start_p50_ms"].as_f64().unwrap() > 0.0, "{row}");
    }
}

/// `bench --scenario idle` measures a real idle `serve` from outside: its
/// CPU, wake-ups and memory, the parts adding up.
#[test]
fn the_idle_bench_measures_a_real_serve_from_outside() {
    let r = bench_json(&["--scenario", "idle", "--idle-seconds", "3"]);
    assert_eq!(r["backend"], "sqlite");
    assert!(r["seconds"].as_f64().unwrap() >= 3.0, "{r}");
    let cpu = r["cpu_s_per_min"].as_f64().unwrap();
    // Idle, whatever the machine: well under a second of CPU a minute.
    assert!(cpu > 0.0 && cpu < 1.0, "{r}");
    assert!(r["wakeups_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    let (rss, anon, file) = (
        r["rss_mib"].as_f64().unwrap(),
        r["rss_anon_mib"].as_f64().unwrap(),
        r["rss_file_mib"].as_f64().unwrap(),
    );
    assert!(rss > 1.0 && anon > 0.0 && file > 0.0, "{r}");
    assert!((anon + file - rss).abs() < 1.0, "{r}");
}

/// `--chart` draws what a comparison ran, the modes against their
/// baselines and the isolation matrix, as one SVG with no font of its own;
/// scenarios it cannot draw, and a database for the isolation matrix's own,
/// are refused in one line.
#[test]
fn a_comparison_is_drawn_as_one_svg() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("modes.svg");
    let r = bench_json(&[
        "--scenario",
        "comparison",
        "--modes",
        "inproc,pooled",
        "--count",
        "300",
        "--latency-samples",
        "3",
        "--misbehaviours",
        "panic",
        "--chart",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(r["modes"]["rows"].as_array().unwrap().len(), 5, "{r}");
    assert_eq!(r["isolation"]["rows"].as_array().unwrap().len(), 2, "{r}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg"), "{drawn}");
    for text in [
        "jobs/s against the bare baseline",
        "latency one at a time",
        "inproc",
        "pooled",
        "panic caught",
    ] {
        assert!(drawn.contains(text), "{text:?} is not drawn");
    }
    assert!(!drawn.contains("@font-face") && !drawn.contains("url("));

    let env = Env::new();
    assert_bad_input(
        env.cli(&["bench", "--scenario", "relay", "--chart", "x.svg"]),
        "--chart",
    );
    assert_bad_input(env.cli(&["bench", "--scenario", "isolation"]), "--database");
}

/// `packaging/install` stages the programs, the unit (pointed at its
/// prefix), completions, and a man page per command that man-db's own
/// `man` finds and renders; groff reads every page without a warning.
#[test]
fn packaging_installs_man_pages_that_man_finds_and_renders() {
    let stage = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("packaging/install"))
        .env("DESTDIR", stage.path())
        .env("PREFIX", "/usr")
        .env("BIN", jobvisor_bin().parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let usr = stage.path().join("usr");
    for f in [
        "bin/jobvisor",
        "bin/jobvisor-worker",
        "share/bash-completion/completions/jobvisor",
        "share/zsh/site-functions/_jobvisor",
        "share/fish/vendor_completions.d/jobvisor.fish",
    ] {
        assert!(usr.join(f).is_file(), "{f}");
    }
    let unit =
        std::fs::read_to_string(stage.path().join("etc/systemd/system/jobvisor.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/jobvisor serve"), "{unit}");

    let manpath = usr.join("share/man");
    let pages: Vec<String> = std::fs::read_dir(manpath.join("man1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for page in [
        "jobvisor.1.gz",
        "jobvisor-run.1.gz",
        "jobvisor-exec-list.1.gz",
        "jobvisor-man.1.gz",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} in {pages:?}");
    }
    let man = |args: &[&str]| {
        Command::new("man")
            .args(args)
            .env("MANPATH", &manpath)
            .env("MANWIDTH", "80")
            .env("MAN_DISABLE_SECCOMP", "1")
            .output()
            .unwrap()
    };
    let found = man(&["-w", "jobvisor-exec-list"]);
    assert!(
        String::from_utf8_lossy(&found.stdout)
            .trim()
            .ends_with("man1/jobvisor-exec-list.1.gz"),
        "{found:?}"
    );
    let shown = man(&["-P", "cat", "jobvisor-run"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("jobvisor-run - Enqueue one run of a handler"),
        "{text}"
    );
    assert!(text.contains("--unique-key"), "{text}");

    // groff reads each page with every warning on, and says nothing.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(jobvisor_bin())
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    for page in std::fs::read_dir(dir.path()).unwrap() {
        let page = page.unwrap().path();
        let lint = Command::new("groff")
            .args(["-man", "-ww", "-z", "-Tutf8"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(
            lint.status.success() && lint.stderr.is_empty(),
            "{}: {}",
            page.display(),
            String::from_utf8_lossy(&lint.stderr)
        );
    }
}

/// Commands take an execution id's unique prefix or suffix (6 hex digits
/// or more); lists show a short form, which the commands take.
#[test]
fn execution_ids_take_a_unique_prefix_or_suffix_and_lists_show_a_form_they_accept() {
    let env = Env::new();
    let ids: Vec<uuid::Uuid> = (0..3).map(|_| env.enqueue(&["noop"])).collect();
    let hex = |id: &uuid::Uuid| id.simple().to_string();
    let shown_id = |arg: &str| -> String {
        let out = env.ok(&["exec", "show", arg, "--json"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The list's ID column: short, and accepted.
    let list = env.ok(&["exec", "list"]);
    let short: Vec<&str> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(short.len(), 3, "{list}");
    for s in &short {
        assert_eq!(s.len(), 8, "{list}");
        let full = shown_id(s);
        assert!(full.replace('-', "").ends_with(s), "{s} -> {full}");
    }

    // A suffix, a prefix (with or without hyphens, in either case), the
    // whole id.
    let id = ids[1];
    assert_eq!(shown_id(&hex(&id)[26..]), id.to_string());
    assert_eq!(shown_id(&hex(&id)[..31]), id.to_string());
    assert_eq!(
        shown_id(&id.to_string()[..30].to_uppercase()),
        id.to_string()
    );
    assert_eq!(shown_id(&id.to_string()), id.to_string());

    // What names no id, or more than one, or is too short, says so.
    let shared = &hex(&ids[0])[..6];
    assert!(
        ids.iter().all(|i| hex(i).starts_with(shared)),
        "made in one go"
    );
    let out = env.cli(&["exec", "show", shared]);
    assert_fails(out, 2, "is ambiguous: it matches");
    assert_fails(
        env.cli(&["exec", "show", "abc12"]),
        2,
        "at least 6 hex digits",
    );
    assert_fails(
        env.cli(&["exec", "show", "zzzzzzzz"]),
        2,
        "at least 6 hex digits",
    );
    let absent = (0..)
        .map(|n| format!("{:08x}", 0x5eed_0000u32 + n))
        .find(|s| ids.iter().all(|i| !hex(i).contains(s.as_str())))
        .unwrap();
    assert_fails(
        env.cli(&["exec", "show", &absent]),
        2,
        "no execution id begins or ends with",
    );

    // Acting commands and --after take them too.
    let child = env.enqueue(&["noop", "--after", short[0]]);
    let out = env.ok(&["exec", "show", &child.to_string(), "--json"]);
    let parents = serde_json::from_str::<serde_json::Value>(&out).unwrap()["parents"].clone();
    assert_eq!(parents, serde_json::json!([shown_id(short[0])]));
    env.ok(&["exec", "cancel", &hex(&ids[2])[24..]]);
    let out = env.ok(&["exec", "show", &ids[2].to_string(), "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["status"], "cancelled", "{out}");
}

/// Every command that creates or acts takes `--json`, and prints what the
/// HTTP API answers for the same action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acting_command_takes_json() {
    let env = Env::new();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = env.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    // Nothing runs yet: what is enqueued stays pending.
    let held = json(&["run", "noop", "--queue", "held", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = json(&["run", "noop", "--queue", "held", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = json(&["exec", "cancel", &held, "--json"]);
    assert_eq!(
        (r["id"].as_str(), r["cancel"].as_str()),
        (Some(held.as_str()), Some("cancelled"))
    );
    let r = json(&[
        "exec",
        "retry",
        "--queue",
        "held",
        "--status",
        "cancelled",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(
        (r["dry_run"].as_bool(), r["matched"].as_u64()),
        (Some(true), Some(1)),
        "{r}"
    );
    let r = json(&["exec", "retry", &held, "--json"]);
    assert_eq!(r["retries"].as_str(), Some(held.as_str()), "{r}");
    let retried = r["id"].as_str().unwrap().to_string();
    assert_ne!(retried, held);
    // (The first attempt, cancelled already, matches too.)
    let r = json(&["exec", "cancel", "--queue", "held", "--json"]);
    assert_eq!(
        (r["matched"].as_u64(), r["cancelled"].as_u64()),
        (Some(3), Some(2)),
        "{r} {other}"
    );
    let r = json(&[
        "exec",
        "retry",
        "--queue",
        "held",
        "--status",
        "cancelled",
        "--json",
    ]);
    assert_eq!(r["retried"].as_u64(), Some(2), "{r}");

    env.ok(&["job", "add", "j", "--handler", "noop", "--every", "1h"]);
    let r = json(&["job", "pause", "j", "--json"]);
    assert_eq!(
        (r["job"].as_str(), r["paused"].as_bool()),
        (Some("j"), Some(true))
    );
    let r = json(&["job", "resume", "j", "--json"]);
    assert_eq!(r["paused"].as_bool(), Some(false));
    assert!(json(&["job", "trigger", "j", "--json"])["id"].is_string());
    let r = json(&["job", "remove", "j", "--json"]);
    assert_eq!(
        (r["job"].as_str(), r["removed"].as_bool()),
        (Some("j"), Some(true))
    );

    let spec = r#"{"name":"w","step":[{"name":"a","handler":"noop"},{"name":"b","handler":"noop","after":["a"]}]}"#;
    let out = env.cli_stdin(&["workflow", "run", "-"], spec);
    assert!(out.status.success(), "{out:?}");
    let wf = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let r = json(&["workflow", "cancel", &wf, "--json"]);
    assert_eq!(
        (r["id"].as_str(), r["cancelled"].as_u64()),
        (Some(wf.as_str()), Some(2)),
        "{r}"
    );
}

/// A program handler starts where `handler add` ran (`--workdir` says
/// otherwise), stored absolute and shown, so its relative paths hold
/// whatever directory `serve` runs in; a handler that takes a built-in's
/// name says that it overrides it for every job and run, there and in
/// `handler list`.
#[test]
fn handlers_keep_their_working_directory_and_overrides_say_so() {
    let env = Env::new();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("data.txt"), "from the project\n").unwrap();
    let add = |args: &[&str]| {
        Command::new(jobvisor_bin())
            .arg("--database")
            .arg(&env.db)
            .args(args)
            .current_dir(project.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = add(&[
        "handler",
        "add",
        "reader",
        "--exec",
        "/bin/sh",
        "--arg",
        "-c",
        "--arg",
        "cat data.txt",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = std::fs::canonicalize(project.path()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("working directory: {}", dir.display())),
        "{stdout}"
    );
    let listed = env.ok(&["handler", "list"]);
    assert!(
        listed.contains(&format!("(in {})", dir.display())),
        "{listed}"
    );
    // `serve` runs elsewhere (the test's directory).
    let serve = env.serve(&[]);
    let id = env.enqueue(&["reader"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = env.store().await;
        let e = finished(store.as_ref(), id).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        let logs = store.logs(id, 0, None, 10).await.unwrap();
        assert!(
            logs.iter().any(|l| l.message == "from the project"),
            "{logs:?}"
        );
    });
    drop(serve);
    // A directory that is not there is refused.
    let out = env.cli(&[
        "handler",
        "add",
        "lost",
        "--exec",
        "/bin/true",
        "--workdir",
        "/no/such/dir",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // Overriding a built-in says so.
    let out = env.cli(&["handler", "add", "echo", "--builtin", "--mode", "process"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("overrides the built-in echo for every job and run"),
        "{err}"
    );
    let listed = env.ok(&["handler", "list"]);
    let line = listed.lines().find(|l| l.starts_with("echo")).unwrap();
    assert!(line.contains("overridden"), "{listed}");
}

/// A second `serve` on a port in use stops at once, exit 2, before it
/// registers a node, makes a cgroup or says it serves; the first says where
/// its dashboard is.
#[test]
fn a_second_serve_on_a_busy_port_leaves_nothing_behind() {
    let env = Env::new();
    let first = env.serve(&[]);
    let addr = first.http_addr();
    let log = first.log();
    assert!(
        log.contains(&format!("dashboard=\"http://{addr}/\"")),
        "{log}"
    );
    let out = env.cli(&["serve", "--listen", &addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&addr) && !err.contains("serving"), "{err}");
    assert!(!err.contains("cgroup"), "{err}");
    let nodes = get(&addr, "/v1/nodes").json();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
}

/// What a new user tripped on: a typo'd handler gets a suggestion;
/// `--until` takes what `--since` takes (and `+DUR`, `now`), `--since` in
/// the future is refused rather than matching nothing; `run --wait` shows
/// what a plain program printed; an attempt retried by hand counts.
#[test]
fn a_new_users_small_stumbles_are_answered() {
    let env = Env::new();
    let out = env.cli(&["run", "ehco"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(r#"did you mean "echo"?"#), "{err}");
    let out = env.cli(&["job", "add", "j", "--handler", "nopo", "--every", "1h"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"did you mean "noop"?"#));
    let out = env.cli(&["run", "zzzzzz"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("did you mean"));

    let old = env.enqueue(&["noop", "--in", "1h"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let listed = env.ok(&["exec", "list", "--until", "1s"]);
    assert!(listed.contains(&old.simple().to_string()[24..]), "{listed}");
    let listed = env.ok(&["exec", "list", "--until", "+1m", "--since", "1h"]);
    assert!(listed.contains(&old.simple().to_string()[24..]), "{listed}");
    let out = env.cli(&["exec", "list", "--since", "+5m"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("+5m is after now"), "{err}");

    env.sh_handler("hello", "echo 'hello there'", &[]);
    let _serve = env.serve(&[]);
    let out = env.ok(&["run", "hello", "--wait"]);
    assert!(
        out.contains("succeeded") && out.contains("hello there"),
        "{out}"
    );
    // Retried by hand: attempt 1 of 2, not of 1.
    let failed = env.enqueue(&["fail", "--payload", r#"{"retry": false}"#]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = env.store().await;
        finished(store.as_ref(), failed).await;
    });
    env.ok(&["exec", "retry", &failed.to_string()]);
    let shown = env.ok(&["exec", "show", &failed.to_string()]);
    assert!(shown.contains("attempt:     1 of 2"), "{shown}");
}

/// Durations are written one way (humantime's: `1s 500ms`, `0.25ms`) by
/// `exec show`, `job show` and `run --wait`.
#[test]
fn durations_are_written_one_way() {
    let env = Env::new();
    let _serve = env.serve(&[]);
    env.ok(&[
        "job",
        "add",
        "nap",
        "--handler",
        "sleep",
        "--payload",
        r#"{"ms":1200}"#,
        "--every",
        "1h",
        "--paused",
    ]);
    env.ok(&["job", "trigger", "nap"]);
    let waited = env.ok(&["run", "sleep", "--payload", r#"{"ms":1200}"#, "--wait"]);
    let took = regex_free_duration(&waited);
    assert!(took.starts_with("1s "), "{waited}");
    let id = waited.split_whitespace().next().unwrap().to_string();
    let shown = env.ok(&["exec", "show", &id]);
    assert!(
        shown.contains(&format!("took:        {took}")),
        "{shown}\n{took}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = env.store().await;
        eventually("the job's run", || async {
            let runs = attempts(store.as_ref(), "nap").await;
            runs.iter()
                .any(|e| e.status == Status::Succeeded)
                .then_some(())
        })
        .await;
    });
    let job = env.ok(&["job", "show", "nap"]);
    let line = job.lines().find(|l| l.starts_with("duration:")).unwrap();
    assert!(
        line.contains("avg 1s ") && line.contains("p95 1s "),
        "{job}"
    );
}

/// The duration `run --wait` printed: "ID succeeded in DUR (attempt 1)".
fn regex_free_duration(out: &str) -> String {
    let first = out.lines().next().unwrap();
    let after = first.split(" in ").nth(1).unwrap();
    after.split(" (attempt").next().unwrap().to_string()
}
