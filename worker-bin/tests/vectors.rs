//! The protocol's test vectors (shared/protocol/vectors.jsonl): what the
//! supervisor must make of each worker line.

use jobvisor_worker::protocol::{parse_worker_line, ParsedLine, ResultStatus, WorkerMessage};
use serde_json::Value;

const VECTORS: &str = include_str!("protocol-vectors.jsonl");

/// What jobvisor adds to the shared contract (`snooze`), in the same form.
const OUR_VECTORS: &str = include_str!("snooze-vectors.jsonl");

#[test]
fn the_vendored_vectors_match_the_shared_contract_when_it_is_present() {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/protocol/vectors.jsonl"
    );
    if let Ok(text) = std::fs::read_to_string(shared) {
        assert_eq!(
            text, VECTORS,
            "worker-bin/tests/protocol-vectors.jsonl is out of date"
        );
    }
}

#[test]
fn every_protocol_vector_parses_as_the_contract_says() {
    let mut checked = 0;
    for line in VECTORS
        .lines()
        .chain(OUR_VECTORS.lines())
        .filter(|l| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line).unwrap();
        let input = v["line"].as_str().unwrap();
        let expect = &v["expect"];
        let parsed = parse_worker_line(input);
        let ctx = format!("line {input:?} parsed as {parsed:?}, expected {expect}");
        match expect["kind"].as_str().unwrap() {
            "plain" => {
                assert_eq!(parsed, ParsedLine::Plain, "{ctx}");
                // Stored as an info line of stdout with the text as written.
                assert_eq!(expect["stored_as"]["level"], "info", "{ctx}");
                assert_eq!(expect["stored_as"]["message"], input, "{ctx}");
            }
            "unknown" => {
                assert!(matches!(parsed, ParsedLine::Unknown(_)), "{ctx}");
                assert_eq!(expect["stored_as"]["level"], "debug", "{ctx}");
            }
            "heartbeat" => assert_eq!(
                parsed,
                ParsedLine::Message(WorkerMessage::Heartbeat),
                "{ctx}"
            ),
            "progress" => {
                let ParsedLine::Message(WorkerMessage::Progress(p)) = parsed else {
                    panic!("{ctx}")
                };
                assert_eq!(
                    p.percent,
                    expect.get("percent").and_then(Value::as_f64),
                    "{ctx}"
                );
                assert_eq!(
                    p.message.as_deref(),
                    expect.get("message").and_then(Value::as_str),
                    "{ctx}"
                );
                assert_eq!(p.done, expect.get("done").and_then(Value::as_u64), "{ctx}");
                assert_eq!(
                    p.total,
                    expect.get("total").and_then(Value::as_u64),
                    "{ctx}"
                );
            }
            "log" => {
                let ParsedLine::Message(WorkerMessage::Log(l)) = parsed else {
                    panic!("{ctx}")
                };
                assert_eq!(l.level.as_str(), expect["level"], "{ctx}");
                assert_eq!(l.message, expect["message"], "{ctx}");
                if let Some(f) = expect.get("fields") {
                    assert_eq!(&Value::Object(l.fields.clone().unwrap()), f, "{ctx}");
                }
                if let Some(Value::Object(want)) = expect.get("fields_contain") {
                    let got = l.fields.clone().unwrap();
                    for (k, val) in want {
                        assert_eq!(got.get(k), Some(val), "{ctx}");
                    }
                }
            }
            "result" => {
                let ParsedLine::Message(WorkerMessage::Result(r)) = parsed else {
                    panic!("{ctx}")
                };
                let status = match r.status {
                    ResultStatus::Succeeded => "succeeded",
                    ResultStatus::Failed => "failed",
                    ResultStatus::Cancelled => "cancelled",
                };
                assert_eq!(status, expect["status"], "{ctx}");
                assert_eq!(r.output.as_ref(), expect.get("output"), "{ctx}");
                assert_eq!(
                    r.error.as_deref(),
                    expect.get("error").and_then(Value::as_str),
                    "{ctx}"
                );
                assert_eq!(
                    r.retry,
                    expect.get("retry").and_then(Value::as_bool),
                    "{ctx}"
                );
            }
            "snooze" => {
                let ParsedLine::Message(WorkerMessage::Snooze(z)) = parsed else {
                    panic!("{ctx}")
                };
                assert_eq!(Some(z.delay_ms), expect["delay_ms"].as_u64(), "{ctx}");
                assert_eq!(
                    z.reason.as_deref(),
                    expect.get("reason").and_then(Value::as_str),
                    "{ctx}"
                );
            }
            "hello" => {
                let ParsedLine::Message(WorkerMessage::Hello(h)) = parsed else {
                    panic!("{ctx}")
                };
                assert_eq!(
                    h.protocol.map(u64::from),
                    expect["protocol"].as_u64(),
                    "{ctx}"
                );
                assert_eq!(h.pooled, expect["pooled"].as_bool().unwrap(), "{ctx}");
                let want: Vec<String> = serde_json::from_value(expect["handlers"].clone()).unwrap();
                assert_eq!(h.handlers, want, "{ctx}");
            }
            other => panic!("unknown vector kind {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 28 + 7, "every vector was checked");
}

/// docs/PROTOCOL.md is the shared contract plus what jobvisor adds to it
/// (such as `inputs`): every line of the contract is in it, in order.
#[test]
fn the_protocol_doc_holds_the_shared_contract_when_it_is_present() {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/PROTOCOL.md");
    let ours = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    if let Ok(text) = std::fs::read_to_string(shared) {
        let doc = std::fs::read_to_string(ours).unwrap();
        let mut lines = doc.lines();
        for want in text.lines() {
            assert!(
                lines.any(|l| l == want),
                "docs/PROTOCOL.md lacks (or reorders) the contract's line {want:?}"
            );
        }
    }
}

/// What a worker must make of each `run` line (run-vectors.jsonl): the
/// fields it reads, `inputs` when there are parents, `snoozes`, `meta` and
/// `tags` when there are some, and fields it does not know passed over.
#[test]
fn every_run_vector_parses_as_documented() {
    use jobvisor_worker::protocol::SupervisorMessage;
    let mut checked = 0;
    for line in include_str!("run-vectors.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line).unwrap();
        let input = v["line"].as_str().unwrap();
        let expect = &v["expect"];
        let parsed: SupervisorMessage = serde_json::from_str(input).unwrap();
        let SupervisorMessage::Run(run) = parsed else {
            panic!("{input} is not a run message")
        };
        assert_eq!(run.execution_id, expect["execution_id"], "{input}");
        assert_eq!(run.handler, expect["handler"], "{input}");
        assert_eq!(run.payload, expect["payload"], "{input}");
        let inputs = serde_json::to_value(&run.inputs).unwrap();
        assert_eq!(inputs, expect["inputs"], "{input}");
        assert_eq!(run.snoozes, expect["snoozes"], "{input}");
        assert_eq!(
            serde_json::to_value(&run.meta).unwrap(),
            expect["meta"],
            "{input}"
        );
        assert_eq!(
            serde_json::to_value(&run.tags).unwrap(),
            expect["tags"],
            "{input}"
        );
        // Written back, a run without parents has no `inputs` field at
        // all: what workers that predate it read.
        let written = serde_json::to_value(SupervisorMessage::Run(run.clone())).unwrap();
        assert_eq!(
            written.get("inputs").is_some(),
            !run.inputs.is_empty(),
            "{input}"
        );
        // Nor `snoozes`, `meta` or `tags` when they are none.
        assert_eq!(written.get("snoozes").is_some(), run.snoozes > 0, "{input}");
        assert_eq!(
            written.get("meta").is_some(),
            !run.meta.is_empty(),
            "{input}"
        );
        assert_eq!(
            written.get("tags").is_some(),
            !run.tags.is_empty(),
            "{input}"
        );
        checked += 1;
    }
    assert_eq!(checked, 5, "every run vector was checked");
}
