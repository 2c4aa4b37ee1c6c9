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
