//! A test's own directory and database, and the CLI run against them.

use super::*;

/// A temporary directory with a database path in it.
pub struct Env {
    pub dir: TempDir,
    pub db: String,
    /// Every command runs with the test built-ins (`append`, `panic`,
    /// `misbehave`), `append` writing under the test directory.
    pub test_builtins: bool,
}

impl Env {
    /// A directory with a database created in it (`jobvisor migrate`): no
    /// command but `serve` and `migrate` creates one.
    pub fn new() -> Self {
        let env = Self::bare();
        env.migrate();
        env
    }

    /// A directory with no database in it yet.
    #[allow(dead_code)]
    pub fn bare() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobvisor.db").display().to_string();
        Self {
            dir,
            db,
            test_builtins: false,
        }
    }

    /// Creates (or brings up to date) the database.
    fn migrate(&self) {
        let out = Command::new(jobvisor_bin())
            .arg("--database")
            .arg(&self.db)
            .arg("migrate")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "jobvisor migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An [`Env`] on a fresh PostgreSQL database of its own, if a server
    /// is there (under CI one must be).
    #[allow(dead_code)]
    pub async fn postgres() -> Option<Self> {
        let db = super::pg_database().await?;
        let env = Self {
            dir: tempfile::tempdir().unwrap(),
            db,
            test_builtins: false,
        };
        env.migrate();
        Some(env)
    }

    /// An [`Env`] whose commands (`serve` included) have the test built-ins.
    #[allow(dead_code)]
    pub fn with_test_builtins() -> Self {
        Self {
            test_builtins: true,
            ..Self::new()
        }
    }

    /// The variables that turn the test built-ins on, if this env has them.
    pub fn builtin_vars(&self) -> Vec<(&'static str, String)> {
        if !self.test_builtins {
            return Vec::new();
        }
        vec![
            ("JOBVISOR_TEST_BUILTINS", "1".to_string()),
            ("JOBVISOR_APPEND_DIR", self.dir.path().display().to_string()),
        ]
    }

    /// Runs `jobvisor --database DB ARGS...` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    /// [`Env::cli`] with more environment variables.
    #[allow(dead_code)]
    pub fn cli_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        Command::new(jobvisor_bin())
            .arg("--database")
            .arg(&self.db)
            .args(args)
            .env("JOBVISOR_WORKER", worker_bin())
            .envs(self.builtin_vars())
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the CLI with `input` on its stdin.
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(jobvisor_bin())
            .arg("--database")
            .arg(&self.db)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs the CLI and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "jobvisor {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Enqueues a run and returns its id.
    pub fn enqueue(&self, args: &[&str]) -> Uuid {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        Uuid::parse_str(self.ok(&all).trim()).unwrap()
    }

    /// A path in the test directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable script into the test directory.
    pub fn script(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    /// Starts `jobvisor serve` on this database.
    pub fn serve(&self, extra: &[&str]) -> Serve {
        self.serve_env(extra, &[])
    }

    /// Registers a `/bin/sh -c SCRIPT` handler with these `handler add`
    /// flags (inline, so that a handler running as another user needs no
    /// access to the test directory).
    pub fn sh_handler(&self, name: &str, script: &str, flags: &[&str]) {
        let mut args = vec![
            "handler", "add", name, "--exec", "/bin/sh", "--arg", "-c", "--arg", script,
        ];
        args.extend_from_slice(flags);
        self.ok(&args);
    }

    /// Runs built-in handler `name` in process mode on a pool of `size`
    /// workers, with extra `handler add` flags.
    pub fn pooled_builtin(&self, name: &str, size: &str, flags: &[&str]) {
        let mut args = vec![
            "handler",
            "add",
            name,
            "--builtin",
            "--mode",
            "process",
            "--pool-size",
            size,
        ];
        args.extend_from_slice(flags);
        self.ok(&args);
    }

    /// Starts `jobvisor serve` with extra environment variables.
    pub fn serve_env(&self, extra: &[&str], vars: &[(&str, &str)]) -> Serve {
        let log = self
            .dir
            .path()
            .join(format!("serve-{}.log", Uuid::now_v7()));
        let child = Command::new(jobvisor_bin())
            .arg("--database")
            .arg(&self.db)
            .arg("serve")
            .args(if extra.contains(&"--poll-interval") {
                &[][..]
            } else {
                &["--poll-interval", "20ms"][..]
            })
            .args(if extra.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            // Tests that stop a busy supervisor do not wait out the
            // 30 s default drain.
            .args(if extra.contains(&"--drain-timeout") {
                &[][..]
            } else {
                &["--drain-timeout", "2s"][..]
            })
            .args(extra)
            .env("JOBVISOR_WORKER", worker_bin())
            .env("RUST_BACKTRACE", "0")
            .envs(self.builtin_vars())
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Serve { child, log }
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        jobvisor::store::open(&self.db)
            .await
            .unwrap()
            .store()
            .clone()
    }
}
