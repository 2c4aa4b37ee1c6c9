//! jobvisor's worker side: the protocol's message types, the handler API
//! shared by both execution modes, the built-in handlers, and the host that
//! runs handlers in a child process.
#![warn(missing_docs)]

pub mod builtins;
// Machinery of the supervisor and the exec shim: public for the `jobvisor`
// package, not part of this crate's API.
#[doc(hidden)]
pub mod guardian;
pub mod handler;
pub mod host;
pub mod protocol;
#[doc(hidden)]
pub mod shim;

pub use handler::{
    BoxFuture, Context, ErrorKind, ExecutionInfo, Handler, HandlerError, HandlerResult,
    IntoHandler, Registry,
};
pub use protocol::{Input, Level, Progress, WorkerMessage};
