//! The service's own log: human-readable on a terminal, journald-friendly
//! under systemd (no timestamps, the journal adds them; a `<N>` syslog
//! priority prefix per line), or JSON lines.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How the service writes its log to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald under systemd (`JOURNAL_STREAM` is set), text otherwise.
    Auto,
    /// Timestamped, human-readable lines (colour on a terminal).
    Text,
    /// `<priority>target: message key=value`, no timestamp.
    Journald,
    /// One JSON object per line.
    Json,
}

/// syslog priority prefixes, as journald reads them from a stream.
struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let priority = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>{}: ", meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the service's subscriber; `JOBVISOR_LOG` filters (default
/// `info`).
pub fn init(format: LogFormat) {
    let filter =
        || EnvFilter::try_from_env("JOBVISOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Journald => builder.with_ansi(false).event_format(Journald).try_init(),
        _ => {
            use std::io::IsTerminal;
            let no_color = std::env::var_os("NO_COLOR");
            builder
                .with_ansi(colour(std::io::stderr().is_terminal(), no_color.as_deref()))
                .try_init()
        }
    };
}

/// Whether the text log is coloured: on a terminal, unless `NO_COLOR` is
/// set to anything but the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn no_color_set_to_anything_turns_colour_off_on_a_terminal() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
