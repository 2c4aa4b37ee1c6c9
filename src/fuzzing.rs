//! Entry points of the fuzz targets (`fuzz/`, cargo fuzz) and of their
//! corpus replay (`tests/fuzz_corpus.rs`, stable `cargo test`). Each takes
//! arbitrary bytes, feeds them to a parser of input from outside, and
//! checks what must hold whatever the input. None may panic.

use crate::schedule::{CronSchedule, Schedule, ScheduleSpec};
use jobvisor_worker::protocol::{parse_worker_line, ParsedLine};

/// A target: arbitrary bytes in, a panic on a violation.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/` file and corpus.
pub const TARGETS: &[(&str, Target)] = &[
    ("protocol_line", protocol_line),
    ("schedule", schedule),
    ("duration_size", duration_size),
    ("http_body", http_body),
];

/// A worker's stdout line: parsing never fails, and a message it yields,
/// written back as a line, parses to the same message.
pub fn protocol_line(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let ParsedLine::Message(m) = parse_worker_line(&text) {
        let again = parse_worker_line(&m.to_line());
        assert_eq!(again, ParsedLine::Message(m), "round trip of {text:?}");
    }
}

const ZONES: [&str; 6] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
];

/// A cron expression (first line), a zone and a start (the bytes after
/// it), or an interval: occurrences strictly increase and each is one the
/// schedule fires at.
pub fn schedule(data: &[u8]) {
    let (head, tail) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let expr = String::from_utf8_lossy(head);
    let mut seed = [0u8; 8];
    for (i, b) in tail.iter().take(8).enumerate() {
        seed[i] = *b;
    }
    let zone = ZONES[tail.get(8).copied().unwrap_or(0) as usize % ZONES.len()];
    // 1970 .. 2100, at any microsecond.
    let from = (u64::from_le_bytes(seed) % 4_102_444_800_000_000) as i64;
    if let Ok(c) = CronSchedule::parse(&expr, zone) {
        let mut at = from;
        for _ in 0..8 {
            let Some(next) = c.next_after(at) else { break };
            assert!(next > at, "{expr:?} in {zone}: {next} after {at}");
            assert!(
                c.fires_at(next),
                "{expr:?} in {zone} does not fire at {next}"
            );
            at = next;
        }
    }
    if let Ok(every) = crate::model::parse_duration(&expr) {
        let spec = ScheduleSpec::Interval {
            every_ms: every.as_millis().min(u64::MAX as u128) as u64,
            anchor: from,
        };
        if let Ok(s) = Schedule::from_spec(&spec) {
            let mut at = from - 1;
            for _ in 0..4 {
                let Some(next) = s.next_after(at) else { break };
                assert!(next > at);
                at = next;
            }
        }
    }
}

/// Durations, sizes and times as the command line and the config file
/// read them.
pub fn duration_size(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::model::parse_duration(&text);
    let _ = crate::model::parse_bytes(&text);
    let _ = crate::model::parse_time(&text, crate::model::now_micros());
    // A rate that parses is written back as text that parses to it.
    if let Ok(rate) = text.parse::<crate::model::Rate>() {
        assert_eq!(rate.to_string().parse::<crate::model::Rate>(), Ok(rate));
    }
}

/// The HTTP API's JSON bodies and query strings.
pub fn http_body(data: &[u8]) {
    crate::http::parse_inputs(data);
}
