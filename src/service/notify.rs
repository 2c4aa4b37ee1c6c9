//! The systemd notification protocol (`sd_notify`), spoken directly: one
//! datagram per message to `$NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace). Without the variable every call is a no-op.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends state changes to the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honoured only when
    /// `WATCHDOG_PID`, if set, is this process).
    ///
    /// ```
    /// use jobvisor::service::notify::Notifier;
    /// // Outside systemd (no NOTIFY_SOCKET): a notifier that says nothing.
    /// # std::env::remove_var("NOTIFY_SOCKET");
    /// let n = Notifier::from_env().unwrap();
    /// assert!(!n.enabled());
    /// ```
    pub fn from_env() -> io::Result<Notifier> {
        let socket = match std::env::var_os("NOTIFY_SOCKET") {
            None => None,
            Some(path) => {
                use std::os::unix::ffi::OsStrExt;
                let bytes = path.as_bytes();
                let addr = match bytes.strip_prefix(b"@") {
                    Some(name) => {
                        use std::os::linux::net::SocketAddrExt;
                        SocketAddr::from_abstract_name(name)?
                    }
                    None => SocketAddr::from_pathname(std::path::Path::new(&path))?,
                };
                Some((UnixDatagram::unbound()?, addr))
            }
        };
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0 && for_us)
            .map(Duration::from_micros);
        Ok(Notifier { socket, watchdog })
    }

    /// Whether a service manager listens.
    ///
    /// ```
    /// use jobvisor::service::notify::Notifier;
    /// # std::env::remove_var("NOTIFY_SOCKET");
    /// assert!(!Notifier::from_env().unwrap().enabled());
    /// ```
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog interval the manager expects pings within.
    ///
    /// ```
    /// use jobvisor::service::notify::Notifier;
    /// # std::env::remove_var("NOTIFY_SOCKET");
    /// assert_eq!(Notifier::from_env().unwrap().watchdog(), None);
    /// ```
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled())
    }

    /// Sends `state` (e.g. `READY=1`, `STATUS=...`); errors are logged, not
    /// fatal: the manager may be restarting.
    ///
    /// ```
    /// use jobvisor::service::notify::Notifier;
    /// # std::env::remove_var("NOTIFY_SOCKET");
    /// let n = Notifier::from_env().unwrap();
    /// n.notify("STATUS=idle"); // a no-op without a service manager
    /// ```
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!(error = %e, state, "cannot notify the service manager");
            }
        }
    }
}
