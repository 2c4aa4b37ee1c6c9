//! The `jobvisor` command: the command line and the bench are this
//! binary's own modules; everything they run is the library's.

mod bench;
mod cli;
mod failure;

fn main() -> std::process::ExitCode {
    cli::main()
}
