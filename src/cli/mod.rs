//! The `jobvisor` command line: argument definitions and one module per
//! subcommand. `main.rs` only calls [`main`].

mod args;
pub(crate) mod config;
mod exec;
mod handler;
mod ids;
mod job;
mod output;
mod queue;
mod run;
mod serve;
mod stats;
mod workflow;

pub use args::Cli;

use clap::Parser;
use std::process::ExitCode;

/// A command's failure, with the exit code it maps to.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage or bad input: exit 2, one line on stderr.
    Input(String),
    /// The job failed or was cancelled (`run --wait`): exit 1.
    JobFailed,
    /// The command was right but could not be carried out (the database is
    /// missing or unreachable, I/O failed): exit 3, one line on stderr.
    Runtime(String),
}

/// The exit codes, as `--help` and the README state them.
pub const EXIT_CODES: &str =
    "Exit codes: 0 success; 1 the job failed or was cancelled (run --wait); \
    2 bad usage or bad input; 3 runtime failure (database missing or unreachable, I/O).";

impl CliError {
    /// The same error, its message led by `what` (an option's name).
    pub(crate) fn context(self, what: &str) -> Self {
        match self {
            CliError::Input(m) => CliError::Input(format!("{what}: {m}")),
            CliError::Runtime(m) => CliError::Runtime(format!("{what}: {m}")),
            CliError::JobFailed => CliError::JobFailed,
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            CliError::JobFailed => 1,
            CliError::Input(_) => 2,
            CliError::Runtime(_) => 3,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Input(msg) | CliError::Runtime(msg) => f.write_str(msg),
            CliError::JobFailed => f.write_str("the job failed"),
        }
    }
}

impl<E: std::error::Error + 'static> From<E> for CliError {
    fn from(e: E) -> Self {
        let text = jobvisor::error_chain(&e);
        if is_runtime(&e) {
            CliError::Runtime(text)
        } else {
            CliError::Input(text)
        }
    }
}

/// Whether `e` is a failure of the environment (database, I/O) rather than
/// of what the user asked for.
fn is_runtime(e: &(dyn std::error::Error + 'static)) -> bool {
    use jobvisor::store::StoreError;
    let store = match e.downcast_ref::<jobvisor::Error>() {
        Some(jobvisor::Error::Store(s)) => Some(s),
        Some(jobvisor::Error::Panicked { .. } | jobvisor::Error::Unwritten(_)) => return true,
        Some(_) => return false,
        None => e.downcast_ref::<StoreError>(),
    };
    if let Some(s) = store {
        return !matches!(s, StoreError::Unsupported(_) | StoreError::NoParent(_));
    }
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<sqlx::Error>() || c.is::<std::io::Error>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A clap error in one line: its first line without the `error: ` prefix;
/// where that line only introduces a list (`...not provided:`), the list's
/// items; and clap's tips (`a similar subcommand exists: 'exec'`).
pub(crate) fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"));
    let first = lines.next().unwrap_or("invalid usage");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let (tips, items): (Vec<&str>, Vec<&str>) = lines.partition(|l| l.starts_with("tip:"));
    let mut out = first.to_string();
    if first.ends_with(':') {
        out = format!("{out} {}", items.join(", "));
    }
    for tip in tips {
        out.push_str("; ");
        out.push_str(tip.trim_start_matches("tip:").trim());
    }
    out
}

/// Shorthand for a bad-input error.
pub(crate) fn input(msg: impl Into<String>) -> CliError {
    CliError::Input(msg.into())
}

/// Parses the process's arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version; and a bare `jobvisor` (or `jobvisor exec`),
        // which prints the help of what it names.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            // On stdout, like --help (clap would print this one to stderr);
            // a closed pipe (`jobvisor | head`) is no failure.
            use std::io::Write;
            let _ = write!(std::io::stdout(), "{}", e.render());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("jobvisor: {} (see --help)", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jobvisor: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = runtime.block_on(args::dispatch(cli));
    // A blocking call that never returns (a file system or a database that
    // hangs) does not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let CliError::Input(msg) | CliError::Runtime(msg) = &e {
                eprintln!("jobvisor: {msg}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
