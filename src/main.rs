//! The `jobvisor` command; all behaviour lives in the library.

fn main() -> std::process::ExitCode {
    jobvisor::cli::main()
}
