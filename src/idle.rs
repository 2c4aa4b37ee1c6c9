//! The idle thresholds, and the test-only knob that shortens them.
//!
//! A service sits idle for hours; what it does at each idle threshold (the
//! code page-out, retiring idle pool workers and database connections,
//! quiet polls) must not stop it from answering SIGTERM. The soak test
//! crosses every threshold in seconds by setting
//! `JOBVISOR_TEST_IDLE_CAP=DUR` (for example `1s`): each threshold is then
//! at most DUR. Nothing else sets it.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable of the test-only cap.
pub(crate) const CAP_ENV: &str = "JOBVISOR_TEST_IDLE_CAP";

/// `d`, or the test cap if that is shorter.
pub(crate) fn idle(d: Duration) -> Duration {
    static CAP: OnceLock<Option<Duration>> = OnceLock::new();
    let cap = CAP.get_or_init(|| {
        std::env::var(CAP_ENV)
            .ok()
            .and_then(|v| humantime::parse_duration(&v).ok())
            .filter(|c| !c.is_zero())
    });
    cap.map_or(d, |c| d.min(c))
}

/// How long a database connection may sit unused in a pool before it is
/// closed (sqlx's default, stated).
pub(crate) fn connection_idle() -> Duration {
    idle(Duration::from_secs(10 * 60))
}

/// How long a database connection is used before it is replaced (sqlx's
/// default, stated).
pub(crate) fn connection_lifetime() -> Duration {
    idle(Duration::from_secs(30 * 60))
}
