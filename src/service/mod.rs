//! Running as a service: systemd readiness and watchdog, the service's own
//! log formats.

pub mod logging;
pub mod notify;
