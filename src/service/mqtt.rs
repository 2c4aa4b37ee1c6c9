//! MQTT in: each message on a subscribed topic becomes one run.
//!
//! A subscription (`[[mqtt.subscribe]]` in the configuration file) names a
//! broker, a topic filter and the handler its messages run. Each node
//! keeps one persistent session per subscription (a stable client id, no
//! clean start), subscribed at QoS 1, with manual acknowledgements: a
//! message is acknowledged only once its run is committed. A crash or a
//! lost database between the two leaves it unacknowledged, and the broker
//! delivers it again (`unique_key_from` then keeps it from running twice).
//! Each node gets every message, and `unique_key_from` makes one run of
//! it however many nodes take it. `shared = true` subscribes as
//! `$share/jobvisor/FILTER` instead, so that nodes split the messages; but
//! mosquitto 2.0 forgets shared subscriptions when it restarts, and drops
//! what is published before the nodes subscribe again.

use crate::engine::mqtt::Broker;
use crate::model::{Meta, UniqueKey};
use crate::submit::RunSpec;
use crate::supervisor::Supervisor;
use rumqttc::{Event, Packet, Publish, QoS};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A message's payload is at most this large (a bigger one is refused by
/// the connection; set the broker's `message_size_limit` below it).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The share group that nodes subscribe in.
pub const SHARE_GROUP: &str = "jobvisor";
/// How long a unique key taken from a message holds after its run ends,
/// unless the subscription says (a broker re-delivers within this).
pub const DEFAULT_UNIQUE_FOR: Duration = Duration::from_secs(3600);
/// How much of a topic a run's meta `topic` keeps.
const TOPIC_META_CHARS: usize = 512;
/// Requests (acknowledgements) queued for the connection at most: far
/// more than the messages in hand, so that an acknowledgement never waits.
const REQUESTS: usize = 4096;
/// Messages received and not yet enqueued, at most ([`MAX_MESSAGE_BYTES`]
/// each). A broker with no in-flight limit would otherwise pour its whole
/// queue into memory while the database is slow; once this many wait,
/// the connection is not read, and the rest stay with the broker.
pub const MAX_IN_HAND: usize = 64;
/// The longest wait before a failed connection or enqueue is tried again.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// A subscription: messages on `topic` at `broker` become runs of
/// `handler`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttSubscription {
    /// `mqtt://[USER[:PASSWORD]@]HOST[:PORT]` or `mqtts://...`.
    pub broker: String,
    /// The environment variable that holds the user's password.
    pub password_env: Option<String>,
    /// The topic filter (`+` and `#` wildcards allowed).
    pub topic: String,
    /// The handler each message runs.
    pub handler: String,
    /// The queue its runs wait in.
    pub queue: String,
    /// A JSON pointer (RFC 6901) into the message whose value is the run's
    /// unique key, so that a message delivered twice runs once.
    pub unique_key_from: Option<String>,
    /// How long that key holds after the run ends.
    pub unique_for: Duration,
    /// The runs' tags.
    pub tags: Vec<String>,
    /// Subscribe as `$share/jobvisor/TOPIC`, so that nodes split the
    /// messages (the broker must support shared subscriptions, and keep
    /// them through its restarts: mosquitto 2.0 does not). Without, each
    /// node gets every message, and `unique_key_from` makes one run of it.
    pub shared: bool,
    /// The MQTT client id (the session kept between connections): by
    /// default one derived from the host name and the subscription.
    pub client_id: Option<String>,
}

impl MqttSubscription {
    /// A subscription of `handler` to `topic` at `broker` (not shared),
    /// runs in queue `default`.
    pub fn new(broker: &str, topic: &str, handler: &str) -> MqttSubscription {
        MqttSubscription {
            broker: broker.to_string(),
            password_env: None,
            topic: topic.to_string(),
            handler: handler.to_string(),
            queue: "default".to_string(),
            unique_key_from: None,
            unique_for: DEFAULT_UNIQUE_FOR,
            tags: Vec::new(),
            shared: false,
            client_id: None,
        }
    }

    /// Checks every field; the error is one line.
    ///
    /// ```
    /// use jobvisor::service::mqtt::MqttSubscription;
    /// assert!(MqttSubscription::new("mqtt://localhost", "sensors/+/temp", "ingest").check().is_ok());
    /// let bad = MqttSubscription::new("mqtt://localhost", "sensors/#/temp", "ingest");
    /// assert!(bad.check().unwrap_err().contains("#"));
    /// ```
    pub fn check(&self) -> Result<(), String> {
        // The password variable is read when it connects, where it runs.
        Broker::parse(&self.broker, None)?;
        if let Some(var) = &self.password_env {
            crate::model::check_env_name("password_env", var)?;
        }
        check_filter(&self.topic)?;
        crate::model::refuse_webhook_handler(&self.handler)?;
        if self.handler.is_empty() {
            return Err("a subscription names the handler its messages run".into());
        }
        if self.queue.is_empty()
            || self.queue.chars().count() > 256
            || self.queue.chars().any(char::is_control)
        {
            return Err(format!("invalid queue name {:?}", self.queue));
        }
        if let Some(p) = &self.unique_key_from {
            if !(p.is_empty() || p.starts_with('/')) {
                return Err(format!(
                    "unique_key_from {p:?} is not a JSON pointer: it starts with '/', as /id or /order/number"
                ));
            }
        }
        crate::model::check_tags(&self.tags)?;
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "invalid client_id {id:?}: 1 to 128 printable characters"
                ));
            }
        }
        Ok(())
    }

    /// The filter it subscribes with.
    fn filter(&self) -> String {
        if self.shared {
            format!("$share/{SHARE_GROUP}/{}", self.topic)
        } else {
            self.topic.clone()
        }
    }

    /// Its client id: the given one, or `jv` and 16 hex digits of the host
    /// name, the broker, the filter and the handler (23 characters at most,
    /// as MQTT 3.1.1 brokers must accept).
    fn client_id(&self) -> String {
        if let Some(id) = &self.client_id {
            return id.clone();
        }
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hash = crate::model::trace::fnv1a(
            [host.as_str(), &self.broker, &self.filter(), &self.handler]
                .join("\n")
                .bytes(),
        );
        format!("jv{hash:016x}")
    }

    /// The run a message `m` on this subscription becomes.
    fn run(&self, topic: &str, body: &[u8]) -> RunSpec {
        let payload = payload(body);
        let mut spec = RunSpec::new(self.handler.clone(), Value::Null);
        spec.queue = self.queue.clone();
        spec.tags = self.tags.clone();
        let mut meta = Meta::new();
        meta.insert(
            "topic".into(),
            topic.chars().take(TOPIC_META_CHARS).collect(),
        );
        spec.meta = meta;
        if let Some(ptr) = &self.unique_key_from {
            let key = match payload.pointer(ptr) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(v) => Some(v.to_string()),
            };
            spec.unique = key.map(|key| UniqueKey {
                key,
                hold_ms: Some(self.unique_for.as_millis().min(u64::MAX as u128) as u64),
                replace: false,
            });
        }
        spec.payload = payload;
        spec
    }
}

/// A message's payload as a run's: its JSON, or `{"text": ...}` for other
/// UTF-8, or `{"base64": ...}` for other bytes.
fn payload(body: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return v;
    }
    match std::str::from_utf8(body) {
        Ok(text) => json!({ "text": text }),
        Err(_) => {
            use base64::Engine;
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(body) })
        }
    }
}

/// Checks a topic filter (MQTT 3.1.1, 4.7): `+` a whole level, `#` the
/// whole last one.
fn check_filter(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 1024 || t.contains('\0') {
        return Err(format!("invalid MQTT topic {t:?}: 1 to 1024 bytes, no NUL"));
    }
    if t.starts_with("$share/") {
        return Err(format!(
            "topic {t:?}: give the topic alone; nodes share it as $share/{SHARE_GROUP}/TOPIC unless shared = false"
        ));
    }
    let levels: Vec<&str> = t.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "invalid MQTT topic {t:?}: '#' stands alone as the last level"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!(
                "invalid MQTT topic {t:?}: '+' stands alone as a level"
            ));
        }
    }
    Ok(())
}

/// Runs the subscriptions that `current` gives until `stop`, starting
/// again (within a second) whenever a reload changes them.
pub(crate) async fn run(
    sup: Supervisor,
    current: impl Fn() -> Vec<MqttSubscription>,
    stop: CancellationToken,
) {
    let mut running: Vec<MqttSubscription> = Vec::new();
    let mut tasks: Option<(CancellationToken, Vec<tokio::task::JoinHandle<()>>)> = None;
    loop {
        let wanted = current();
        if wanted != running || tasks.is_none() {
            if let Some((token, handles)) = tasks.take() {
                token.cancel();
                for h in handles {
                    let _ = h.await;
                }
            }
            let token = stop.child_token();
            let handles = wanted
                .iter()
                .map(|s| tokio::spawn(subscription(sup.clone(), s.clone(), token.clone())))
                .collect();
            tasks = Some((token, handles));
            running = wanted;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    if let Some((_, handles)) = tasks {
        for h in handles {
            let _ = h.await;
        }
    }
}

/// Keeps one subscription's session until `stop`. Two tasks: this one
/// polls the connection (which the client needs, to connect again, ping
/// and send what is queued), and a taker turns each message into a run,
/// in order, and acknowledges it once committed. Neither waits on the
/// other: a database that is down holds the messages unacknowledged (the
/// broker sends no more than its in-flight window, and this task takes no
/// more than [`MAX_IN_HAND`]), and the connection stays up while the
/// broker's window is the smaller.
async fn subscription(sup: Supervisor, sub: MqttSubscription, stop: CancellationToken) {
    let filter = sub.filter();
    let mut pause = Duration::from_secs(1);
    let options = loop {
        let ready = async {
            let broker = Broker::parse(&sub.broker, sub.password_env.as_deref())?;
            let mut options = broker.options(sub.client_id()).await?;
            options.set_clean_session(false);
            options.set_manual_acks(true);
            options.set_max_packet_size(MAX_MESSAGE_BYTES + 64 * 1024, 64 * 1024);
            Ok::<_, String>(options)
        };
        match ready.await {
            Ok(o) => break o,
            Err(e) => {
                tracing::warn!(broker = %redacted(&sub.broker), topic = %sub.topic, error = %e, retry_in = ?pause, "MQTT subscription cannot connect");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    };
    let (client, mut events) = rumqttc::AsyncClient::new(options, REQUESTS);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Publish>(MAX_IN_HAND);
    let taker = {
        let (sup, sub, stop, client) = (sup.clone(), sub.clone(), stop.clone(), client.clone());
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                if !take(&sup, &sub, &p, &stop).await {
                    return;
                }
                if client.ack(&p).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut pause = Duration::from_secs(1);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(broker = %redacted(&sub.broker), topic = %filter, resumed = ack.session_present, "MQTT subscription connected");
                pause = Duration::from_secs(1);
                // A resumed session keeps its subscription, and
                // subscribing again would have the broker send its
                // retained messages again. Not so a shared one: mosquitto
                // 2.0 does not restore it from its persistence file, and a
                // share gets no retained message.
                if (!ack.session_present || sub.shared)
                    && client.try_subscribe(&filter, QoS::AtLeastOnce).is_err()
                {
                    tracing::warn!(topic = %filter, "MQTT subscription: the client's queue is full; connecting again");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                use rumqttc::SubscribeReasonCode;
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    tracing::error!(broker = %redacted(&sub.broker), topic = %filter, "the broker refused the subscription (its ACL?)");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(broker = %redacted(&sub.broker), topic = %sub.topic, error = %e, retry_in = ?pause, "MQTT subscription interrupted");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
    // Unacknowledged messages stay with the broker's session.
    taker.abort();
    let _ = taker.await;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
}

fn redacted(url: &str) -> String {
    Broker::parse(url, None).map_or_else(|_| crate::model::REDACTED.to_string(), |b| b.redacted())
}

/// Enqueues the run of message `p`: `true` once it is committed (or
/// refused for good, said in the log: it is acknowledged all the same, or
/// it would come back forever), `false` if stopped first. A database that
/// fails is tried again, backing off, the message held.
async fn take(
    sup: &Supervisor,
    sub: &MqttSubscription,
    p: &Publish,
    stop: &CancellationToken,
) -> bool {
    let topic = p.topic.clone();
    let spec = sub.run(&topic, &p.payload);
    let mut pause = Duration::from_millis(100);
    loop {
        let sent = tokio::select! {
            _ = stop.cancelled() => return false,
            r = sup.submit_many(vec![spec.clone()]) => r,
        };
        let wait = match sent {
            Ok(out) => {
                tracing::debug!(topic = %topic, execution = %out[0].id, duplicate = out[0].duplicate, "MQTT message enqueued");
                return true;
            }
            // Until the handler is registered, the messages wait at the
            // broker.
            Err(e @ crate::Error::UnknownHandler(_)) => {
                tracing::error!(topic = %topic, error = %e, "MQTT message held: its handler is not registered");
                MAX_PAUSE
            }
            Err(e @ crate::Error::Store(_)) => {
                tracing::warn!(topic = %topic, error = %crate::error_chain(&e), retry_in = ?pause, "MQTT message held: cannot enqueue its run");
                pause = (pause * 2).min(MAX_PAUSE);
                pause
            }
            Err(e) => {
                tracing::error!(topic = %topic, error = %crate::error_chain(&e), "MQTT message dropped: it cannot become a run");
                return true;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_becomes_a_run_with_its_topic_and_key() {
        let mut sub = MqttSubscription::new("mqtt://localhost", "orders/+", "ingest");
        sub.unique_key_from = Some("/order/id".into());
        let run = sub.run("orders/eu", br#"{"order": {"id": 42}}"#);
        assert_eq!(run.payload, json!({"order": {"id": 42}}));
        assert_eq!(run.meta["topic"], "orders/eu");
        let key = run.unique.expect("a key");
        assert_eq!((key.key.as_str(), key.hold_ms), ("42", Some(3_600_000)));
        let run = sub.run("orders/eu", b"plain words");
        assert_eq!(run.payload, json!({"text": "plain words"}));
        assert!(run.unique.is_none(), "no key where the pointer finds none");
        let run = sub.run("orders/eu", &[0xff, 0x00]);
        assert_eq!(run.payload, json!({"base64": "/wA="}));
    }

    #[test]
    fn topic_filters_follow_mqtt_3_1_1() {
        for ok in ["a", "a/+/b", "#", "a/#", "+", "/a", "a//b"] {
            assert!(check_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a+/b", "$share/g/a", "a\0b"] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_client_id_is_stable_and_short() {
        let a = MqttSubscription::new("mqtt://localhost", "orders/+", "ingest");
        assert_eq!(a.client_id(), a.client_id());
        assert!(a.client_id().len() <= 23);
        let b = MqttSubscription::new("mqtt://localhost", "orders/+", "other");
        assert_ne!(a.client_id(), b.client_id());
    }
}
