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
mod webhook;
mod workflow;

pub(crate) use crate::failure::{input, CliError, EXIT_CODES};
pub use args::Cli;
use args::Command;

use clap::Parser;
use std::process::ExitCode;

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
    let result = runtime.block_on(dispatch(cli));
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

/// Runs the command `cli` names.
async fn dispatch(cli: Cli) -> Result<(), CliError> {
    // The database a command other than `serve` uses: --database (or
    // JOBVISOR_DATABASE), else the one the service's config file names,
    // else the default.
    let db = cli
        .database
        .clone()
        .or_else(config::database_of_service)
        .unwrap_or_else(jobvisor::default_database);
    match cli.command {
        Command::Serve(a) => serve::serve(cli.database.clone(), a).await,
        Command::Migrate => {
            jobvisor::store::open(&db).await?;
            println!("database {} is up to date", jobvisor::store::redact(&db));
            Ok(())
        }
        Command::Handler(cmd) => handler::handler(&db, cmd).await,
        Command::Run(a) => run::run(&db, a).await,
        Command::Exec(cmd) => exec::exec(&db, cmd).await,
        Command::Job(cmd) => job::job(&db, cmd).await,
        Command::Queue(cmd) => queue::queue(&db, cmd).await,
        Command::Stats { job, json } => stats::stats(&db, job, json).await,
        Command::Workflow(cmd) => workflow::workflow(&db, cmd).await,
        Command::Webhook(cmd) => webhook::webhook(&db, cmd).await,
        Command::Bench(a) => crate::bench::bench(cli.database.clone(), a).await,
        Command::Man { dir } => {
            use clap::CommandFactory;
            let fail = |e: std::io::Error| {
                CliError::Runtime(format!("cannot write man pages to {}: {e}", dir.display()))
            };
            // Like every directory jobvisor makes, its own user's alone;
            // `packaging/install` installs the pages themselves 0644.
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(fail)?;
            }
            clap_mangen::generate_to(Cli::command(), &dir).map_err(fail)?;
            let pages = std::fs::read_dir(&dir)
                .map_err(fail)?
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("jobvisor"))
                .count();
            println!("{pages} man pages in {}", dir.display());
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into a buffer first: clap_complete panics on a failed write
            // (`jobvisor completions bash | head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "jobvisor", &mut script);
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Runtime(
                    format!("cannot write the completion script: {e}"),
                )),
                _ => Ok(()),
            }
        }
        Command::CheckConfig { path } => {
            let path =
                config::locate(path.as_deref()).unwrap_or_else(|| config::DEFAULT_PATH.into());
            let f = config::load(&path).map_err(|e| input(e.to_string()))?;
            // The database `serve` would use, for the handlers registered
            // there; none yet is fine (serve would create it).
            let db = cli.database.or(f.settings.database.clone()).unwrap_or(db);
            let store = match jobvisor::store::open_existing(&db).await {
                Ok(s) => Some(s),
                Err(jobvisor::store::StoreError::Missing(_)) => None,
                Err(e) => return Err(e.into()),
            };
            // A database failure is exit 3, a refused file exit 2.
            config::validate(&f, store.as_deref()).await?;
            println!(
                "{}: valid ({} handlers, {} jobs, {} queues, {} webhooks)",
                path.display(),
                f.declared.handlers.len(),
                f.declared.jobs.len(),
                f.declared.queues.len(),
                f.declared.webhooks.len()
            );
            Ok(())
        }
    }
}

/// "unknown handler", with the closest known name when one is near
/// enough to be a typo (`ehco`: did you mean `echo`?).
pub(crate) async fn unknown_handler(store: &dyn jobvisor::store::Reads, name: &str) -> CliError {
    let known = jobvisor::store::all_handlers(store)
        .await
        .unwrap_or_default();
    let near = known
        .iter()
        .map(|h| (strsim::damerau_levenshtein(name, &h.name), &h.name))
        .filter(|(d, n)| *d <= 2.max(name.len() / 4) && *d < n.len())
        .min();
    match near {
        Some((_, n)) => input(format!(
            "unknown handler {name:?}: did you mean {n:?}? (`jobvisor handler list` shows them all)"
        )),
        None => input(jobvisor::Error::UnknownHandler(name.to_string()).to_string()),
    }
}
