//! The README's commands, run as written: a newcomer copies them into a
//! shell beside a running `serve`, so each one must work on a fresh clone.
//!
//! The test reads README.md's `sh` blocks from "A short tour" on and runs
//! each in bash, in order (later blocks use what earlier ones made), in a
//! directory of its own laid out like a clone: `target/release/jobvisor`
//! is this build's binary, and `examples/` and `sdk/` are the repository's.
//! It leaves out what builds, benchmarks, installs or needs root or a
//! PostgreSQL cluster: those are covered by CI itself, the bench tests,
//! the packaging test and the multinode suite. Every line must succeed
//! (the status of its last command, as a user at a prompt sees it), and a
//! few outputs the prose promises are checked.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A block that is left out, and why: any of these in its text.
const LEFT_OUT: &[&str] = &[
    "cargo ",         // builds (CI does)
    "./scripts/",     // the test suite, chaos and the dashboard history
    "jobvisor bench", // benchmarks (tests/cli.rs runs each scenario small)
    "sudo ",          // installs (tests/cli.rs installs into a DESTDIR)
    "pg_virtualenv",  // PostgreSQL (tests/multinode.rs)
];

/// How long one block may take.
const BLOCK_DEADLINE: Duration = Duration::from_secs(180);

/// The README's shell blocks from the heading `from` on, each with the line
/// its fence opens on.
fn blocks(readme: &str, from: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut started = false;
    for (n, line) in readme.lines().enumerate() {
        started |= line.trim() == from;
        if !started {
            continue;
        }
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some((n + 1, String::new())),
            (Some(_), "```") => out.extend(current.take()),
            (Some((_, text)), l) => {
                text.push_str(l);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// Each line of `block`, made to stop the script with a message if it
/// fails (`LINE || { ...; exit 1; }`: the status of the line's last
/// command, as at a prompt).
fn checked(block: &str) -> String {
    let mut script = String::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let quoted = line.replace('\'', r"'\''");
        script.push_str(&format!(
            "{line} || {{ echo 'README line failed ('$?'): {quoted}' >&2; exit 1; }}\n"
        ));
    }
    script
}

/// `program`, to run in the clone at `dir` as a newcomer's shell would:
/// the default database there, no colour, nothing on stdin.
fn in_clone(program: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .env("JOBVISOR_WORKER", worker_bin())
        .env_remove("JOBVISOR_DATABASE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn the_readme_commands_work_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path();
    std::fs::create_dir_all(clone.join("target/release")).unwrap();
    std::os::unix::fs::symlink(jobvisor_bin(), clone.join("target/release/jobvisor")).unwrap();
    for shared in ["examples", "sdk"] {
        std::os::unix::fs::symlink(repo.join(shared), clone.join(shared)).unwrap();
    }

    // The service, as the set-up section starts it, on a free port rather
    // than 7180 (which a developer's own `serve` may hold).
    let log = clone.join("serve.log");
    let serve = in_clone("./target/release/jobvisor", clone)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut serve = Serve { child: serve, log };
    let addr = serve.http_addr();

    let blocks = blocks(&readme, "## A short tour");
    let mut ran = 0;
    let mut outputs = Vec::new();
    for (line, block) in &blocks {
        if LEFT_OUT.iter().any(|s| block.contains(s)) {
            continue;
        }
        let script = checked(&block.replace("localhost:7180", &addr));
        let mut child = in_clone("bash", clone)
            .arg("-c")
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > BLOCK_DEADLINE {
                let _ = child.kill();
                panic!("README.md:{line}: the block ran over {BLOCK_DEADLINE:?}:\n{block}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "README.md:{line}: a command failed:\n{block}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserve log:\n{}",
            serve.log()
        );
        ran += 1;
        outputs.push((block.clone(), stdout));
    }
    // Sixteen run today; a parse that finds few has gone wrong, not the
    // README.
    assert!(ran >= 12, "only {ran} README blocks ran");

    // What the prose promises of some of them.
    let output_of = |needle: &str| -> &str {
        &outputs
            .iter()
            .find(|(b, _)| b.contains(needle))
            .unwrap_or_else(|| panic!("no README block has {needle:?}"))
            .1
    };
    let failing = output_of("run fail --retries 2");
    assert!(failing.contains("exit code 1"), "{failing}");
    let cancelled = output_of("exec cancel \"$id\"");
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    let report = output_of("run report");
    assert!(report.contains("succeeded"), "{report}");
    let health = output_of("/healthz");
    assert!(health.contains("ok"), "{health}");

    let status = serve.stop();
    assert!(status.success(), "serve: {status:?}\n{}", serve.log());
}
