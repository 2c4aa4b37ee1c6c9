//! `jobvisor bench`: placeholder replaced below.
use clap::Args;
/// Bench options.
#[derive(Debug, Args)]
pub struct BenchArgs {}
/// Runs the benchmark.
pub async fn bench(_a: BenchArgs) -> Result<(), crate::cli::CliError> {
    Ok(())
}
