//! What a delivery posts: an event's body, as JSON or as a Slack message.

use crate::model::{Execution, Micros, Timestamp};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// An execution's output larger than this (as JSON) is left out of its
/// events' bodies (`output_truncated`): a receiver wants to know what
/// happened, and reads the execution for the rest.
pub(crate) const OUTPUT_BYTES: usize = 16 * 1024;

/// The body of `event` about execution `e`, for webhook `webhook`'s
/// delivery `delivery`, as of `at`.
pub(crate) fn execution_event(
    event: &str,
    e: &Execution,
    webhook: &str,
    delivery: Uuid,
    at: Micros,
) -> Value {
    let mut execution = match serde_json::to_value(e) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    // The payload is the caller's input: not the receiver's business, and
    // it can be large.
    execution.remove("payload");
    execution.remove("payload_truncated");
    let big = execution
        .get("output")
        .is_some_and(|o| serde_json::to_string(o).map_or(0, |s| s.len()) > OUTPUT_BYTES);
    if big {
        execution.insert("output".into(), Value::Null);
        execution.insert("output_truncated".into(), Value::Bool(true));
    }
    json!({
        "delivery": delivery,
        "webhook": webhook,
        "event": event,
        "at": Timestamp(at),
        "execution": execution,
    })
}

/// A Slack message (`{"text": ...}`) that says in one line what `body`
/// (an event's JSON body) tells.
pub(crate) fn slack(body: &Value) -> Value {
    let event = body["event"].as_str().unwrap_or("event");
    let text = match body.get("execution") {
        Some(e) => {
            let id = e["id"].as_str().unwrap_or_default();
            let short = &id[id.len().saturating_sub(8)..];
            let what = match e["job"].as_str() {
                Some(job) => format!("job `{job}`"),
                None => format!(
                    "run `{short}` of `{}`",
                    e["handler"].as_str().unwrap_or("?")
                ),
            };
            let icon = match event {
                "failed" => ":x:",
                "succeeded" => ":white_check_mark:",
                "retrying" => ":repeat:",
                "cancelled" | "skipped" => ":heavy_minus_sign:",
                _ => ":information_source:",
            };
            let attempt = match (e["attempt"].as_u64(), e["max_attempts"].as_u64()) {
                (Some(a), Some(m)) if m > 1 => format!(" (attempt {a} of {m})"),
                _ => String::new(),
            };
            let error = e["error"]
                .as_str()
                .map(|err| format!(": {}", first_line(err, 300)))
                .unwrap_or_default();
            format!("{icon} {what} {event}{attempt}{error}")
        }
        None => {
            let subject = body["job"]
                .as_str()
                .map(|j| format!("job `{j}`"))
                .unwrap_or_default();
            let said = body["message"].as_str().unwrap_or_default();
            let icon = if event.ends_with(".recovered") {
                ":white_check_mark:"
            } else {
                ":rotating_light:"
            };
            format!("{icon} {event} {subject}: {}", first_line(said, 300))
        }
    };
    json!({ "text": text })
}

/// The first line of `text`, at most `max` characters.
fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slack_message_says_what_failed_in_one_line() {
        let body = json!({
            "event": "failed",
            "execution": {"id": "0193a1b2-0000-7000-8000-00000000abcd", "job": "nightly",
                          "handler": "backup", "attempt": 3, "max_attempts": 3,
                          "error": "disk full\nat line 2"},
        });
        assert_eq!(
            slack(&body)["text"],
            ":x: job `nightly` failed (attempt 3 of 3): disk full"
        );
        let adhoc = json!({"event": "succeeded", "execution": {"id": "0193a1b2-0000-7000-8000-00000000abcd",
                           "job": null, "handler": "echo", "attempt": 1, "max_attempts": 1}});
        assert_eq!(
            slack(&adhoc)["text"],
            ":white_check_mark: run `0000abcd` of `echo` succeeded"
        );
    }
}
