//! Where the binaries under test are.

use super::*;

pub fn jobvisor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jobvisor"))
}

pub fn worker_bin() -> PathBuf {
    let p = jobvisor_bin().with_file_name("jobvisor-worker");
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

pub fn python() -> String {
    if Path::new("/usr/bin/python3").is_file() {
        return "/usr/bin/python3".into();
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for the foreign-worker tests");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The browser tests' driver directory (`tests/browser`) and Chromium, or
/// `None` when either is missing (said loudly; under CI it fails).
pub fn browser() -> Option<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium =
        std::env::var("JOBVISOR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = if !Path::new(&chromium).exists() {
        Some("chromium is not installed (apt-get install chromium)")
    } else if !dir.join("node_modules/playwright-core").exists() {
        Some("playwright-core is not installed: run ./scripts/test, which installs it")
    } else {
        None
    };
    if let Some(msg) = missing {
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("!!! SKIPPED: {msg}");
        return None;
    }
    Some((dir, chromium))
}
