//! MQTT brokers: the connection settings of a broker URL, shared by the
//! webhooks that publish events ([`super::webhooks`]) and the
//! subscriptions that turn messages into runs (`service::mqtt`).
//!
//! A broker is `mqtt://[USER[:PASSWORD]@]HOST[:PORT]` (1883 by default) or
//! `mqtts://...` (TLS, 8883 by default), checked against the system's CA
//! certificates, or those of `SSL_CERT_FILE` / `SSL_CERT_DIR`. The password
//! may instead come from an environment variable, so that no file or row
//! holds it.

use std::sync::Arc;
use std::time::Duration;

/// How long a connection may go without a packet before the client pings.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A broker, as its URL gives it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Broker {
    host: String,
    port: u16,
    tls: bool,
    user: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "{}", self.redacted())
    }
}

impl Broker {
    /// The broker of `url`, its password from the URL or else from the
    /// environment variable `password_env`.
    pub(crate) fn parse(url: &str, password_env: Option<&str>) -> Result<Broker, String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("invalid MQTT broker URL: {e}"))?;
        let tls = match u.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            s => {
                return Err(format!(
                    "an MQTT broker's URL starts mqtt:// or mqtts://, not {s}://"
                ))
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("an MQTT broker's URL names its host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
            return Err(
                "an MQTT broker's URL is mqtt://[USER[:PASSWORD]@]HOST[:PORT], with no path".into(),
            );
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| "the broker URL's user or password is not UTF-8".to_string())
        };
        let user = match u.username() {
            "" => None,
            name => Some(decode(name)?),
        };
        let mut password = u.password().map(decode).transpose()?;
        if let Some(var) = password_env {
            if password.is_some() {
                return Err(format!(
                    "the broker URL holds a password, and ${var} is named for one: give one of them"
                ));
            }
            password = Some(
                std::env::var(var)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        format!(
                            "the broker's password is read from ${var}, which the supervisor's \
                             environment does not hold (or holds empty)"
                        )
                    })?,
            );
        }
        if password.is_some() && user.is_none() {
            return Err("the broker URL gives a password but no user (mqtt://USER@HOST)".into());
        }
        Ok(Broker {
            port: u.port().unwrap_or(if tls { 8883 } else { 1883 }),
            host,
            tls,
            user,
            password,
        })
    }

    /// The broker as logs may show it: no password.
    pub(crate) fn redacted(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{user}{host}:{}", self.port)
    }

    /// The client's settings to connect as `client_id`. The host is
    /// resolved here, and refused if it has no address a webhook may reach
    /// (a link-local one is the cloud's metadata service); without TLS the
    /// client connects to the address found, with TLS to the name (which
    /// the certificate is checked against).
    pub(crate) async fn options(&self, client_id: String) -> Result<rumqttc::MqttOptions, String> {
        let found: Vec<std::net::IpAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .map(|a| a.ip())
            .collect();
        let Some(ip) = found
            .iter()
            .copied()
            .find(|ip| crate::model::webhook_may_reach(*ip))
        else {
            return Err(format!(
                "{} has no address jobvisor may connect to (link-local addresses are refused)",
                self.host
            ));
        };
        let host = if self.tls {
            self.host.clone()
        } else {
            ip.to_string()
        };
        let mut o = rumqttc::MqttOptions::new(client_id, host, self.port);
        o.set_keep_alive(KEEP_ALIVE);
        if let Some(user) = &self.user {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if self.tls {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls_config()?),
            ));
        }
        Ok(o)
    }
}

/// TLS with ring's crypto and the system's CA certificates (or
/// `SSL_CERT_FILE`'s and `SSL_CERT_DIR`'s), read once: each delivery
/// connects anew.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG.get_or_init(read_tls_config).clone()
}

fn read_tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate rustls cannot read is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!(
            "no CA certificate to check the broker's against ({})",
            found
                .errors
                .first()
                .map_or("none found".to_string(), |e| e.to_string())
        ));
    }
    // As the API's server does: ring, which lacks only the post-quantum
    // key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_url_gives_host_port_tls_and_login() {
        let b = Broker::parse("mqtts://ops%40site:p%3Ass@broker.example.com", None).unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("broker.example.com", 8883, true)
        );
        assert_eq!(b.user.as_deref(), Some("ops@site"));
        assert_eq!(b.password.as_deref(), Some("p:ss"));
        assert_eq!(b.redacted(), "mqtts://ops@site@broker.example.com:8883");
        assert!(!format!("{b:?}").contains("p:ss"));
        let b = Broker::parse("mqtt://[::1]:1884", None).unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("::1", 1884, false));
        assert_eq!(b.redacted(), "mqtt://[::1]:1884");
    }

    #[test]
    fn a_bad_broker_url_says_why() {
        for (url, says) in [
            ("http://h", "mqtt://"),
            ("mqtt://h/topic", "no path"),
            ("mqtt://:pw@h", "no user"),
            ("mqtt://u:pw@h", "one of them"),
        ] {
            let env = if url.contains("u:pw") {
                Some("PATH")
            } else {
                None
            };
            let e = Broker::parse(url, env).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        let e = Broker::parse("mqtt://u@h", Some("JOBVISOR_TEST_NO_SUCH_VARIABLE")).unwrap_err();
        assert!(e.contains("$JOBVISOR_TEST_NO_SUCH_VARIABLE"), "{e}");
    }
}
