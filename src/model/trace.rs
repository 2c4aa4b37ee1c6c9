//! W3C trace context (<https://www.w3.org/TR/trace-context/>) as a run
//! carries it: the trace it belongs to, the span that stands for the run,
//! and the caller's span it continues.
//!
//! Span ids are derived from execution ids, so that every node (and every
//! attempt, wherever it runs) names the same spans without asking: the
//! run's span from its first attempt's id, each attempt's and each claim
//! wait's from the attempt's own. A run whose caller gave no trace starts
//! one, whose id is its first attempt's id.

use super::Micros;
use std::sync::atomic::{AtomicBool, Ordering};
use uuid::Uuid;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces (set once the exporter is up): a
/// run enqueued while it does gets a trace of its own when its caller
/// gave none.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Says that this process exports traces (see [`exporting`]).
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// A caller's span, as a `traceparent` header names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteSpan {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The caller's span.
    pub span_id: [u8; 8],
    /// Whether the caller records the trace (the `sampled` flag).
    pub sampled: bool,
}

impl RemoteSpan {
    /// Parses a `traceparent` header (version `00`, or a later version
    /// read as `00` as the recommendation says).
    ///
    /// ```
    /// use jobvisor::model::RemoteSpan;
    /// let s = RemoteSpan::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert!(s.sampled);
    /// assert!(RemoteSpan::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
    /// ```
    pub fn parse(header: &str) -> Result<RemoteSpan, String> {
        let bad = |why: &str| format!("invalid traceparent {header:?}: {why}");
        let h = header.trim();
        let parts: Vec<&str> = h.splitn(5, '-').collect();
        if parts.len() < 4 {
            return Err(bad("give VERSION-TRACEID-SPANID-FLAGS"));
        }
        let (version, trace, span, flags) = (parts[0], parts[1], parts[2], parts[3]);
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2) || version == "ff" {
            return Err(bad("the version is two lowercase hex digits, not ff"));
        }
        if version == "00" && (parts.len() > 4 || flags.len() != 2) {
            return Err(bad("version 00 has exactly four fields"));
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(&flags[..flags.len().min(2)], 2) {
            return Err(bad(
                "the ids and flags are lowercase hex of 32, 16 and 2 digits",
            ));
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        decode(trace, &mut trace_id);
        decode(span, &mut span_id);
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(bad("an id of all zeroes is invalid"));
        }
        let f = u8::from_str_radix(&flags[..2], 16).map_err(|_| bad("bad flags"))?;
        Ok(RemoteSpan {
            trace_id,
            span_id,
            sampled: f & 1 == 1,
        })
    }
}

/// What a run carries of its trace, stored with each of its attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The run's span (derived from its first attempt's id).
    pub run_span: [u8; 8],
    /// The caller's span it continues, if any.
    pub parent_span: Option<[u8; 8]>,
    /// Whether the trace is recorded.
    pub sampled: bool,
    /// When the run was enqueued: its span starts then.
    pub since: Micros,
}

/// What each span of a run is derived from an execution id for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanOf {
    /// The run, from its first attempt's id.
    Run,
    /// An attempt, from its id.
    Attempt,
    /// The wait of an attempt for its claim, from its id.
    Wait,
}

impl TraceContext {
    /// The context of run `first` (its first attempt's id), enqueued at
    /// `since`, continuing `caller` if given, else a trace of its own.
    pub fn for_run(first: Uuid, caller: Option<RemoteSpan>, since: Micros) -> TraceContext {
        TraceContext {
            trace_id: caller.map_or(*first.as_bytes(), |c| c.trace_id),
            run_span: span_id(first, SpanOf::Run),
            parent_span: caller.map(|c| c.span_id),
            sampled: caller.is_none_or(|c| c.sampled),
            since,
        }
    }

    /// The `traceparent` that names span `span` of this trace, as a worker
    /// gets it.
    pub fn traceparent(&self, span: [u8; 8]) -> String {
        format!(
            "00-{}-{}-{}",
            encode(&self.trace_id),
            encode(&span),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// As stored: `TRACE:RUNSPAN:PARENT:FLAGS:SINCE` (`PARENT` empty for a
    /// trace of its own).
    ///
    /// ```
    /// use jobvisor::model::TraceContext;
    /// let c = TraceContext::for_run(uuid::Uuid::now_v7(), None, 42);
    /// assert_eq!(TraceContext::from_column(&c.to_column()), Some(c));
    /// ```
    pub fn to_column(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            encode(&self.trace_id),
            encode(&self.run_span),
            self.parent_span.map(|p| encode(&p)).unwrap_or_default(),
            if self.sampled { "01" } else { "00" },
            self.since
        )
    }

    /// Reads what [`TraceContext::to_column`] wrote.
    pub fn from_column(s: &str) -> Option<TraceContext> {
        let mut it = s.split(':');
        let (t, r, p, f, since) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
        let mut trace_id = [0u8; 16];
        let mut run_span = [0u8; 8];
        if t.len() != 32 || r.len() != 16 || !decode(t, &mut trace_id) || !decode(r, &mut run_span)
        {
            return None;
        }
        let parent_span = match p {
            "" => None,
            p => {
                let mut b = [0u8; 8];
                (p.len() == 16 && decode(p, &mut b)).then_some(b)?;
                Some(b)
            }
        };
        Some(TraceContext {
            trace_id,
            run_span,
            parent_span,
            sampled: f == "01",
            since: since.parse().ok()?,
        })
    }
}

/// The span id of `what` derived from execution `id`: 8 bytes of an
/// FNV-1a hash of the id and the kind, never all zeroes.
pub fn span_id(id: Uuid, what: SpanOf) -> [u8; 8] {
    let salt = match what {
        SpanOf::Run => 1u8,
        SpanOf::Attempt => 2,
        SpanOf::Wait => 3,
    };
    let mut h = fnv1a(id.as_bytes().iter().chain([salt].iter()).copied());
    if h == 0 {
        h = 1;
    }
    h.to_be_bytes()
}

/// The 64-bit FNV-1a hash of `bytes`: stable across builds and hosts,
/// for ids derived from others (span ids here, MQTT client ids).
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode(s: &str, out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 {
        return false;
    }
    for (i, o) in out.iter_mut().enumerate() {
        match u8::from_str_radix(&s[2 * i..2 * i + 2], 16) {
            Ok(v) => *o = v,
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_follows_the_w3c_examples() {
        // The recommendation's own example, and its rules on what is not.
        let s =
            RemoteSpan::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(encode(&s.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(encode(&s.span_id), "00f067aa0ba902b7");
        assert!(s.sampled);
        let unsampled =
            RemoteSpan::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
        // A later version may add fields; it is read as version 00.
        assert!(
            RemoteSpan::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
                .is_ok()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(RemoteSpan::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "" and "a".
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn span_ids_are_stable_and_distinct_per_kind() {
        let id = Uuid::now_v7();
        assert_eq!(span_id(id, SpanOf::Run), span_id(id, SpanOf::Run));
        assert_ne!(span_id(id, SpanOf::Run), span_id(id, SpanOf::Attempt));
        assert_ne!(span_id(id, SpanOf::Attempt), span_id(id, SpanOf::Wait));
        assert_ne!(
            span_id(id, SpanOf::Run),
            span_id(Uuid::now_v7(), SpanOf::Run)
        );
    }

    #[test]
    fn a_run_continues_its_callers_trace_or_starts_its_own() {
        let first = Uuid::now_v7();
        let own = TraceContext::for_run(first, None, 7);
        assert_eq!(own.trace_id, *first.as_bytes());
        assert_eq!(own.parent_span, None);
        let caller =
            RemoteSpan::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let cont = TraceContext::for_run(first, Some(caller), 7);
        assert_eq!(cont.trace_id, caller.trace_id);
        assert_eq!(cont.parent_span, Some(caller.span_id));
        assert!(!cont.sampled);
        assert_eq!(TraceContext::from_column(&cont.to_column()), Some(cont));
        assert!(cont
            .traceparent(span_id(first, SpanOf::Attempt))
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    }
}
