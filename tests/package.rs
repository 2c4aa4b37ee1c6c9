//! The Debian package, installed for real: `packaging/deb/build` (cargo-deb)
//! makes it from this build's programs, `dpkg -i` installs it on this
//! machine, and `dpkg --purge` takes it away again.
//!
//! It changes the machine (a system user, files under /usr and /etc), so it
//! runs only as root, where asked to (`JOBVISOR_TEST_DPKG=1`) or under CI,
//! and never where a jobvisor package is installed already. Under CI it
//! must run.

use std::path::Path;
use std::process::Command;

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env_remove("JOBVISOR_DATABASE")
        .env_remove("JOBVISOR_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(program: &str, args: &[&str]) -> String {
    let (ok, text) = run(program, args);
    assert!(ok, "{program} {args:?} failed:\n{text}");
    text
}

/// Whether this machine may be changed, and if not, why.
fn refusal() -> Option<String> {
    let asked = std::env::var_os("CI").is_some()
        || std::env::var("JOBVISOR_TEST_DPKG").is_ok_and(|v| v == "1");
    if !asked {
        return Some("set JOBVISOR_TEST_DPKG=1 (it installs a package on this machine)".into());
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Some("it needs root (dpkg -i)".into());
    }
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        return Some("dpkg is missing".into());
    }
    if run("dpkg-query", &["-W", "-f=${Status}", "jobvisor"])
        .1
        .contains("installed")
    {
        return Some("a jobvisor package is installed here already".into());
    }
    None
}

#[test]
fn the_debian_package_installs_like_a_debian_service_and_purges_clean() {
    if let Some(why) = refusal() {
        eprintln!("!!! the Debian package was NOT tested: {why}");
        assert!(std::env::var_os("CI").is_none(), "CI must test the package");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // From the programs the tests run (the debug build), compressed
    // fast: what is tested is the package's making and contents, not the
    // release profile.
    must(
        root.join("packaging/deb/build").to_str().unwrap(),
        &[
            "--prebuilt",
            "--profile",
            "dev",
            "--fast",
            "--output",
            "target/debian/test.deb",
        ],
    );
    let deb = root.join("target/debian/test.deb");
    let deb = deb.to_str().unwrap();
    let info = must("dpkg-deb", &["--info", deb]);
    assert!(info.contains("Package: jobvisor"), "{info}");
    assert!(info.contains("adduser"), "depends on adduser: {info}");
    let listing = must("dpkg-deb", &["--contents", deb]);
    for path in [
        "./usr/bin/jobvisor",
        "./usr/bin/jobvisor-worker",
        "./etc/jobvisor/jobvisor.toml",
        "systemd/system/jobvisor.service",
        "./usr/share/man/man1/jobvisor.1.gz",
        "./usr/share/man/man1/jobvisor-webhook-add.1.gz",
        "./usr/share/bash-completion/completions/jobvisor",
        "./usr/share/zsh/vendor-completions/_jobvisor",
        "./usr/share/fish/vendor_completions.d/jobvisor.fish",
        "./usr/share/doc/jobvisor/copyright",
    ] {
        assert!(
            listing.contains(path),
            "the package lacks {path}:\n{listing}"
        );
    }

    let installed = must("dpkg", &["-i", deb]);
    // Whatever happens below, the machine is left as it was found.
    struct Purge;
    impl Drop for Purge {
        fn drop(&mut self) {
            let _ = run("dpkg", &["--purge", "jobvisor"]);
        }
    }
    let purge = Purge;
    assert!(installed.contains("jobvisor"), "{installed}");
    let conffiles = must("dpkg-query", &["--control-show", "jobvisor", "conffiles"]);
    assert!(
        conffiles.contains("/etc/jobvisor/jobvisor.toml"),
        "{conffiles}"
    );
    // The system user, with no login, at home in the state directory.
    let user = must("getent", &["passwd", "jobvisor"]);
    let fields: Vec<&str> = user.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "a system user: {user}");
    assert_eq!(fields[5], "/var/lib/jobvisor", "{user}");
    assert!(
        fields[6].ends_with("nologin") || fields[6].ends_with("false"),
        "{user}"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let state = std::fs::metadata("/var/lib/jobvisor").unwrap();
    assert_eq!(state.uid(), uid);
    assert_eq!(state.permissions().mode() & 0o777, 0o700);
    let config = std::fs::metadata("/etc/jobvisor/jobvisor.toml").unwrap();
    assert_eq!(
        config.permissions().mode() & 0o777,
        0o640,
        "the config may hold a token"
    );
    // The unit: hardened, as the system user, and systemd finds nothing
    // wrong with it.
    let unit_path = [
        "/usr/lib/systemd/system/jobvisor.service",
        "/lib/systemd/system/jobvisor.service",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("the unit is installed");
    let unit = std::fs::read_to_string(unit_path).unwrap();
    for line in [
        "ExecStart=/usr/bin/jobvisor serve",
        "Environment=JOBVISOR_WORKER=/usr/bin/jobvisor-worker",
        "User=jobvisor",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "StateDirectory=jobvisor",
    ] {
        assert!(unit.contains(line), "the unit lacks {line:?}:\n{unit}");
    }
    assert!(!unit.contains("/usr/local"), "{unit}");
    match Command::new("systemd-analyze")
        .args(["verify", unit_path])
        .output()
    {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
        }
        Err(e) => panic!("systemd-analyze: {e}"),
    }
    // The installed programs, on the installed config.
    let checked = must("/usr/bin/jobvisor", &["check-config"]);
    assert!(
        checked.contains("/etc/jobvisor/jobvisor.toml: valid"),
        "{checked}"
    );
    let version = must("/usr/bin/jobvisor", &["--version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    assert!(must("man", &["-w", "jobvisor-webhook-add"]).contains("/usr/share/man/man1"));

    // The service's database appears where the config says, owned by the
    // user the unit runs as (made here as systemd would run it).
    must(
        "runuser",
        &[
            "-u",
            "jobvisor",
            "--",
            "/usr/bin/jobvisor",
            "--database",
            "/var/lib/jobvisor/jobvisor.db",
            "migrate",
        ],
    );
    assert!(Path::new("/var/lib/jobvisor/jobvisor.db").exists());

    drop(purge);
    let (_, status) = run("dpkg-query", &["-W", "-f=${Status}", "jobvisor"]);
    assert!(!status.contains("installed"), "{status}");
    for gone in [
        "/usr/bin/jobvisor",
        "/usr/bin/jobvisor-worker",
        "/etc/jobvisor",
        "/var/lib/jobvisor",
        unit_path,
        "/usr/share/man/man1/jobvisor.1.gz",
        "/usr/share/doc/jobvisor",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} outlived the purge");
    }
    // What Debian policy keeps: the system user.
    assert!(
        run("getent", &["passwd", "jobvisor"]).0,
        "the system user stays"
    );
}
