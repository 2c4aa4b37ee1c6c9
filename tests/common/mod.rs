//! Helpers for the integration tests, one file per concern (as pueue's
//! `tests/helper/`): a fresh database per test, the real `jobvisor` binary
//! serving it, processes, PostgreSQL, and polling with generous deadlines.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code, unused_imports)]

mod app;
mod bins;
mod env;
mod events;
mod http;
mod mysql;
mod pg;
mod procs;
mod serve;
mod sup;
mod wait;

pub use app::*;
pub use bins::*;
pub use env::*;
pub use events::*;
pub use http::*;
pub use mysql::*;
pub use pg::*;
pub use procs::*;
pub use serve::*;
pub use sup::*;
pub use wait::*;

use jobvisor::model::Execution;
use jobvisor::store::{ExecFilter, Reads, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use uuid::Uuid;

/// Generous: a slow shared machine must never flake these tests.
pub const DEADLINE: Duration = Duration::from_secs(60);
