//! Properties that hold for any input (proptest): a schedule's occurrences
//! strictly increase and each is an instant the schedule fires at; a
//! protocol message survives serialize -> parse.

use jobvisor::schedule::CronSchedule;
use jobvisor_worker::protocol::{
    parse_worker_line, Hello, Level, LogMessage, ParsedLine, Progress, ResultMessage, ResultStatus,
    WorkerMessage,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Pacific/Chatham",
    "Asia/Kolkata",
];

/// One item of a field over `lo..=hi`: a value, a range, a step.
fn item(lo: u32, hi: u32) -> impl Strategy<Value = String> {
    (lo..=hi, lo..=hi, 1..=hi.max(2), 0..6u8).prop_map(move |(a, b, step, kind)| {
        let (a, b) = (a.min(b), a.max(b));
        match kind {
            0 | 1 => a.to_string(),
            2 => format!("{a}-{b}"),
            3 => format!("{a}-{b}/{step}"),
            4 => format!("{a}/{step}"),
            _ => format!("*/{step}"),
        }
    })
}

fn field(lo: u32, hi: u32, star: u32) -> impl Strategy<Value = String> {
    (0..100u32, prop::collection::vec(item(lo, hi), 1..=3)).prop_map(move |(roll, items)| {
        if roll < star {
            "*".to_string()
        } else {
            items.join(",")
        }
    })
}

/// crontab(5) lines, with the extensions and a seconds field now and then.
fn expression() -> impl Strategy<Value = String> {
    let day_ext = prop_oneof![
        Just("L".to_string()),
        Just("LW".to_string()),
        (1..=31u32).prop_map(|d| format!("{d}W")),
        Just("?".to_string()),
    ];
    let dow_ext = prop_oneof![
        (0..=7u32).prop_map(|d| format!("{d}L")),
        (0..=7u32, 1..=5u32).prop_map(|(d, n)| format!("{d}#{n}")),
        Just("?".to_string()),
    ];
    (
        prop::option::weighted(0.2, field(0, 59, 30)),
        field(0, 59, 20),
        field(0, 23, 40),
        prop_oneof![4 => field(1, 31, 50), 1 => day_ext],
        field(1, 12, 60),
        prop_oneof![4 => field(0, 7, 50), 1 => dow_ext],
    )
        .prop_map(|(sec, min, hour, dom, month, dow)| match sec {
            Some(s) => format!("{s} {min} {hour} {dom} {month} {dow}"),
            None => format!("{min} {hour} {dom} {month} {dow}"),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn occurrences_strictly_increase_and_each_is_one_the_schedule_fires_at(
        expr in expression(),
        zone in prop::sample::select(ZONES),
        // 2000 .. 2060, at any microsecond.
        from in 946_684_800_000_000i64..2_840_140_800_000_000,
    ) {
        let Ok(c) = CronSchedule::parse(&expr, zone) else { return Ok(()) };
        let mut at = from;
        for _ in 0..12 {
            let Some(next) = c.next_after(at) else { break };
            prop_assert!(next > at, "{} in {}: {} after {}", expr, zone, next, at);
            prop_assert!(c.fires_at(next), "{} in {} does not fire at {}", expr, zone, next);
            at = next;
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn worker_message() -> impl Strategy<Value = WorkerMessage> {
    let text = || ".{0,24}";
    prop_oneof![
        (
            any::<Option<u32>>(),
            any::<bool>(),
            prop::collection::vec(text(), 0..3)
        )
            .prop_map(|(protocol, pooled, handlers)| WorkerMessage::Hello(Hello {
                protocol,
                pooled,
                handlers
            })),
        (
            prop::option::of(-50f64..150.0),
            prop::option::of(text()),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            prop::option::of(text().prop_map(|s| serde_json::json!({ "note": s, "n": [1, 2] })))
        )
            .prop_map(|(percent, message, done, total, data)| {
                WorkerMessage::Progress(
                    Progress {
                        percent,
                        message,
                        done,
                        total,
                        data,
                    }
                    .normalized(),
                )
            }),
        (
            prop::sample::select(Level::ALL.to_vec()),
            text(),
            prop::option::of(prop::collection::btree_map(
                "[a-z]{1,6}",
                json_value(),
                0..4
            ))
        )
            .prop_map(|(level, message, fields)| {
                WorkerMessage::Log(LogMessage {
                    level,
                    message,
                    fields: fields.map(|m| m.into_iter().collect::<Map<_, _>>()),
                })
            }),
        Just(WorkerMessage::Heartbeat),
        (
            prop::sample::select(vec![
                ResultStatus::Succeeded,
                ResultStatus::Failed,
                ResultStatus::Cancelled
            ]),
            prop::option::of(json_value()),
            prop::option::of(text()),
            any::<Option<bool>>()
        )
            .prop_map(|(status, output, error, retry)| {
                WorkerMessage::Result(ResultMessage {
                    status,
                    // `"output": null` reads back as no output.
                    output: output.filter(|v| !v.is_null()),
                    error,
                    retry,
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn a_protocol_message_survives_serialize_then_parse(m in worker_message()) {
        let line = m.to_line();
        prop_assert!(!line.contains('\n'), "one line: {:?}", line);
        prop_assert_eq!(parse_worker_line(&line), ParsedLine::Message(m));
    }
}
