//! A command's failure and the exit code it maps to: the leaf that the
//! CLI's commands and `jobvisor bench` (a command too) both return.

/// A command's failure, with the exit code it maps to.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage or bad input: exit 2, one line on stderr.
    Input(String),
    /// The job failed or was cancelled (`run --wait`): exit 1.
    JobFailed,
    /// The command was right but could not be carried out (the database is
    /// missing or unreachable, I/O failed): exit 3, one line on stderr.
    Runtime(String),
}

/// The exit codes, as `--help` and the README state them.
pub const EXIT_CODES: &str =
    "Exit codes: 0 success; 1 the job failed or was cancelled (run --wait); \
    2 bad usage or bad input; 3 runtime failure (database missing or unreachable, I/O).";

impl CliError {
    /// The same error, its message led by `what` (an option's name).
    pub(crate) fn context(self, what: &str) -> Self {
        match self {
            CliError::Input(m) => CliError::Input(format!("{what}: {m}")),
            CliError::Runtime(m) => CliError::Runtime(format!("{what}: {m}")),
            CliError::JobFailed => CliError::JobFailed,
        }
    }

    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::JobFailed => 1,
            CliError::Input(_) => 2,
            CliError::Runtime(_) => 3,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Input(msg) | CliError::Runtime(msg) => f.write_str(msg),
            CliError::JobFailed => f.write_str("the job failed"),
        }
    }
}

impl<E: std::error::Error + 'static> From<E> for CliError {
    fn from(e: E) -> Self {
        let text = jobvisor::error_chain(&e);
        if is_runtime(&e) {
            CliError::Runtime(text)
        } else {
            CliError::Input(text)
        }
    }
}

/// Whether `e` is a failure of the environment (database, I/O) rather than
/// of what the user asked for.
fn is_runtime(e: &(dyn std::error::Error + 'static)) -> bool {
    use jobvisor::store::StoreError;
    let store = match e.downcast_ref::<jobvisor::Error>() {
        Some(jobvisor::Error::Store(s)) => Some(s),
        Some(jobvisor::Error::Panicked { .. } | jobvisor::Error::Unwritten(_)) => return true,
        Some(_) => return false,
        None => e.downcast_ref::<StoreError>(),
    };
    if let Some(s) = store {
        return !matches!(s, StoreError::Unsupported(_) | StoreError::NoParent(_));
    }
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<sqlx::Error>() || c.is::<std::io::Error>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Shorthand for a bad-input error.
pub(crate) fn input(msg: impl Into<String>) -> CliError {
    CliError::Input(msg.into())
}
