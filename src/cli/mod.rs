//! The `jobvisor` command line: argument definitions and one module per
//! subcommand. `main.rs` only calls [`main`].

mod args;
pub(crate) mod config;
mod exec;
mod handler;
mod job;
mod output;
mod queue;
mod run;
mod serve;
mod stats;

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
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::JobFailed => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Input(msg) => f.write_str(msg),
            CliError::JobFailed => f.write_str("the job failed"),
        }
    }
}

impl<E: std::error::Error + 'static> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::Input(crate::error_chain(&e))
    }
}

/// Shorthand for a bad-input error.
pub(crate) fn input(msg: impl Into<String>) -> CliError {
    CliError::Input(msg.into())
}

/// Parses the process's arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first line, without its "error: " prefix.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid usage");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("jobvisor: {first} (see --help)");
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
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(args::dispatch(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let CliError::Input(msg) = &e {
                eprintln!("jobvisor: {msg}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
