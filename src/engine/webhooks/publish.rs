//! A delivery to an MQTT broker: the event's JSON body published with
//! QoS 1 to the webhook's topic. The broker's PUBACK delivers it; no
//! answer in the time given fails the attempt, and the
//! run's retries try again (a subscriber may so get it twice, with the
//! same `delivery` id in the body).

use crate::engine::mqtt::Broker;
use crate::model::WebhookSpec;
use jobvisor_worker::{Context, HandlerError, HandlerResult};
use rumqttc::{Event, Packet, QoS};
use serde_json::{json, Value};

/// Publishes `bytes`, the body of `event` (`body`), to `hook`'s broker.
pub(crate) async fn publish(
    hook: &WebhookSpec,
    body: &Value,
    bytes: Vec<u8>,
    ctx: &Context,
    timeout: std::time::Duration,
) -> HandlerResult {
    let topic = topic(hook.topic_template(), body);
    let broker =
        Broker::parse(&hook.url, hook.secret_env.as_deref()).map_err(HandlerError::retryable)?;
    let where_to = broker.redacted();
    // A client id of its own each time: a clean session, nothing kept.
    let id = format!("jvp{:016x}", fastrand::u64(..));
    let mut options = broker
        .options(id)
        .await
        .map_err(|e| HandlerError::retryable(format!("cannot publish to {where_to}: {e}")))?;
    options.set_clean_session(true);
    options.set_max_packet_size(64 * 1024, bytes.len() + topic.len() + 64);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 4);
    client
        .publish(topic.clone(), QoS::AtLeastOnce, false, bytes)
        .await
        .map_err(|e| HandlerError::retryable(format!("cannot publish to {where_to}: {e}")))?;
    let acked = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("{e}")),
            }
        }
    };
    let done = tokio::select! {
        r = tokio::time::timeout(timeout, acked) => r,
        _ = ctx.cancelled() => return Err(HandlerError::cancelled()),
    };
    match done {
        Ok(Ok(())) => {
            // A polite goodbye; the delivery stands whatever becomes of it.
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), events.poll()).await;
            ctx.info(format!("{where_to} acknowledged it on {topic}"))
                .await;
            Ok(json!({ "topic": topic }))
        }
        Ok(Err(e)) => Err(HandlerError::retryable(format!(
            "cannot publish to {where_to}: {e}"
        ))),
        Err(_) => Err(HandlerError::retryable(format!(
            "{where_to} did not acknowledge within {}s",
            timeout.as_secs()
        ))),
    }
}

/// The topic of `template` for the event `body`: `{event}`, `{job}` and
/// `{handler}` filled in (`-` for none), each with any `/`, `+`, `#` or
/// NUL replaced by `_`, so that a value is one level and no wildcard.
pub(crate) fn topic(template: &str, body: &Value) -> String {
    let execution = body.get("execution");
    let pick = |key: &str| {
        execution
            .and_then(|e| e.get(key))
            .or_else(|| body.get(key))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .replace(['/', '+', '#', '\0'], "_")
    };
    template
        .replace("{event}", &pick("event"))
        .replace("{job}", &pick("job"))
        .replace("{handler}", &pick("handler"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_filled_in_one_level_per_value() {
        let body = json!({"event": "failed", "execution": {"job": "a/b+#", "handler": "echo"}});
        assert_eq!(
            topic("ops/{event}/{job}/{handler}", &body),
            "ops/failed/a_b__/echo"
        );
        let alert = json!({"event": "job.failing", "job": "nightly"});
        assert_eq!(
            topic("ops/{event}/{job}/{handler}", &alert),
            "ops/job.failing/nightly/-"
        );
        let adhoc = json!({"event": "started", "execution": {"job": null, "handler": "h"}});
        assert_eq!(topic("{job}", &adhoc), "-");
    }
}
