//! The built-in handler `webhook`: posts one delivery's body to its
//! webhook's URL, as the webhook stands when the attempt runs, signed with
//! its secret (or publishes it to an MQTT broker: [`super::publish`]). A 2xx answer delivers it; anything else (or no answer in
//! [`REQUEST_TIMEOUT`]) fails the attempt, and the run's retries try again.

use super::body;
use crate::model::WebhookFormat;
use crate::store::Store;
use jobvisor_worker::{Context, HandlerError, HandlerResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long a receiver has to answer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a receiver's answer is kept (in the attempt's error or log).
const ANSWER_BYTES: usize = 256;

/// A delivery run's payload.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Post {
    webhook: String,
    event: String,
    /// The delivery's id: its first attempt's execution id.
    delivery: Uuid,
    body: Value,
}

/// Resolves a webhook's host name to its addresses but the link-local
/// ones (169.254.0.0/16, fe80::/10: a cloud's metadata service, which a
/// webhook must not be made to reach) and the unspecified ones.
struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| crate::model::webhook_may_reach(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} has no address a webhook may reach").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client deliveries share: no redirect followed (a 3xx is an
/// answer, and not a success), no proxy from the environment, no
/// link-local address.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(Resolver))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("jobvisor/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's settings are valid")
}

/// Runs one attempt of a delivery.
pub(crate) async fn post(
    store: Arc<dyn Store>,
    client: reqwest::Client,
    ctx: Context,
    payload: Value,
) -> HandlerResult {
    let p: Post = serde_json::from_value(payload).map_err(HandlerError::invalid_payload)?;
    let hook = store
        .webhook(&p.webhook)
        .await
        .map_err(|e| HandlerError::retryable(crate::error_chain(&e)))?
        .ok_or_else(|| {
            HandlerError::permanent(format!(
                "webhook {:?} was removed: there is nowhere to deliver to",
                p.webhook
            ))
        })?;
    let bytes = match hook.format {
        WebhookFormat::Json => serde_json::to_vec(&p.body),
        WebhookFormat::Slack => serde_json::to_vec(&body::slack(&p.body)),
    }
    .expect("JSON values serialize");
    if hook.is_mqtt() {
        return super::publish::publish(&hook, &p.body, bytes, &ctx, REQUEST_TIMEOUT).await;
    }
    let mut request = client
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Jobvisor-Event", &p.event)
        .header("X-Jobvisor-Delivery", p.delivery.to_string());
    if let Some(var) = &hook.secret_env {
        let secret = std::env::var(var)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                HandlerError::retryable(format!(
                    "webhook {:?} is signed with ${var}, which the supervisor's environment \
                     does not hold (or holds empty)",
                    hook.name
                ))
            })?;
        let t = chrono::Utc::now().timestamp();
        request = request.header(
            "X-Jobvisor-Signature",
            signature(secret.as_bytes(), t, &bytes),
        );
    }
    let where_to = hook.clone().redacted().url;
    let sent = tokio::select! {
        r = request.body(bytes).send() => r,
        _ = ctx.cancelled() => return Err(HandlerError::cancelled()),
    };
    // Without the URL: reqwest's errors name it whole, and its path may
    // be the webhook's secret.
    let response = sent.map_err(|e| {
        HandlerError::retryable(format!(
            "cannot post to {where_to}: {}",
            crate::error_chain(&e.without_url())
        ))
    })?;
    let status = response.status();
    let answer = answer(response).await;
    if status.is_success() {
        ctx.info(format!("{where_to} answered {status}")).await;
        return Ok(json!({ "status": status.as_u16() }));
    }
    let said = if answer.is_empty() {
        String::new()
    } else {
        format!(": {answer}")
    };
    Err(HandlerError::retryable(format!(
        "{where_to} answered {status}{said}"
    )))
}

/// `X-Jobvisor-Signature` of `body` sent at `t` (Unix seconds):
/// `t=T,v1=HEX`, HEX the HMAC-SHA256 of `T.body` with `secret`.
pub(crate) fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(format!("{t}.").as_bytes());
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// The start of a receiver's answer, as one line of text.
async fn answer(mut response: reqwest::Response) -> String {
    let mut got = Vec::new();
    while got.len() < ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            _ => break,
        }
    }
    got.truncate(ANSWER_BYTES);
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_time_a_dot_and_the_body() {
        // RFC 4231's test case 2, with its message sent as a body at t=0
        // would sign "0.what do ya want..."; the message is split instead
        // so that "t." plus the body is the RFC's message exactly.
        let s = signature(b"Jefe", 0, b"what do ya want for nothing?");
        assert!(s.starts_with("t=0,v1="), "{s}");
        assert_eq!(s.len(), "t=0,v1=".len() + 64);
        let rfc = signature_of(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            rfc,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            s,
            format!(
                "t=0,v1={}",
                signature_of(b"Jefe", b"0.what do ya want for nothing?")
            )
        );
    }

    fn signature_of(key: &[u8], message: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let tag = ring::hmac::sign(&key, message);
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}
