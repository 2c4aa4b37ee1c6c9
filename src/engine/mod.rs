//! The engine: the actors that run a node, and what runs executions.
//!
//! - [`dispatch`] claims due executions and gives each an owner task,
//!   which runs it through [`runner`] (one module per mode, process
//!   control, the guardian);
//! - [`scheduler`] turns due jobs into executions;
//! - [`maintenance`] heartbeats, rescues dead nodes' executions, hears
//!   other processes' notices;
//! - [`relay`] writes what executions produce (logs, progress, ends) in
//!   batches;
//! - [`events`] announces lifecycle events;
//! - `webhooks` turns the changes the store recorded into deliveries,
//!   and posts them (the built-in handler `webhook`).
//!
//! They talk through the messages in `shared`, the leaf they all import;
//! none imports the layers above (client, supervisor, service).

pub(crate) mod dispatch;
pub mod events;
pub(crate) mod maintenance;
pub(crate) mod mqtt;
pub mod relay;
pub mod runner;
pub mod scheduler;
mod shared;
pub(crate) mod traces;
pub(crate) mod webhooks;

pub(crate) use shared::*;
