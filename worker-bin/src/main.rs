//! `jobvisor-worker`: a worker process hosting the built-in handlers.

use jobvisor_worker::{guardian, host, shim, Registry};
use std::process::ExitCode;

fn main() -> ExitCode {
    // The exec shim runs before anything else: it must stay cheap. It
    // returns only to go on as the worker (the program it was to start is
    // this one).
    let mut args = std::env::args_os().skip(1);
    let shimmed = args.next().as_deref() == Some(std::ffi::OsStr::new("--exec-shim"));
    if shimmed {
        let rest: Vec<_> = args.skip_while(|a| a == "--").collect();
        shim::exec_shim(&rest);
    }
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(guardian::GUARDIAN_ARG)) {
        guardian::run();
    }
    let mut registry = Registry::with_builtins();
    if let Some(t) = jobvisor_worker::builtins::TestBuiltins::from_env() {
        t.register(&mut registry);
    }
    let first = match shimmed {
        true => None,
        false => std::env::args().nth(1),
    };
    match first.as_deref() {
        Some("--version" | "-V") => {
            println!("jobvisor-worker {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--list") => {
            for name in registry.names() {
                println!("{name}");
            }
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h") => {
            println!(
                "jobvisor-worker: hosts jobvisor's built-in handlers over the worker protocol \
                 (JSON lines on stdin/stdout). Started by the supervisor; --list names the handlers."
            );
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("jobvisor-worker: unknown argument {other:?} (try --help)");
            return ExitCode::from(2);
        }
        None => {}
    }
    host::main(registry)
}
