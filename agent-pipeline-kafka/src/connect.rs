//! Opening `rskafka` clients from [`KafkaSettings`]: brokers, client id, SASL, TLS, backoff.

use std::sync::Arc;
use std::time::Duration;

use agent_pipeline::bus::BusError;
use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};

use crate::settings::{KafkaSettings, SaslMechanism, TLS_CA_FILE, Tls};

/// Opens one client (one connection per broker) with `role` appended to the client id, so
/// that the brokers' logs tell the producing and the consuming connections apart.
pub(crate) async fn client(settings: &KafkaSettings, role: &str) -> Result<Client, BusError> {
    let mut builder = ClientBuilder::new(settings.brokers.clone())
        .client_id(format!("{}-{role}", settings.client_id))
        .max_message_size(settings.max_message_bytes.max(1024 * 1024) * 4 + 1024 * 1024)
        .backoff_config(backoff(settings.give_up_after));
    if let Some(sasl) = &settings.sasl {
        let credentials = Credentials::new(sasl.username.clone(), sasl.password.clone());
        builder = builder.sasl_config(match sasl.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        });
    }
    if let Some(tls) = &settings.tls {
        builder = builder.tls_config(Arc::new(tls_config(tls)?));
    }
    let connecting = builder.build();
    let client = match settings.give_up_after {
        Some(limit) => tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| unreachable_brokers(settings, &format!("no answer within {limit:?}")))?,
        None => connecting.await,
    };
    client.map_err(|error| unreachable_brokers(settings, &error.to_string()))
}

fn unreachable_brokers(settings: &KafkaSettings, why: &str) -> BusError {
    BusError::Transport(format!(
        "cannot reach the brokers {} (REDPANDA_BROKERS): {why}",
        settings.brokers.join(",")
    ))
}

/// Exponential backoff from 100 ms to 5 s between tries, for `give_up_after` in all (or
/// until the broker answers).
fn backoff(give_up_after: Option<Duration>) -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
        base: 2.0,
        deadline: give_up_after,
    }
}

/// A TLS client configuration on the ring provider (the one the workspace links; see
/// `crates.md`), trusting the system's certificate authorities or those of `KAFKA_TLS_CA_FILE`.
pub(crate) fn tls_config(tls: &Tls) -> Result<rustls::ClientConfig, BusError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let config_error = |problem: String| BusError::Config(problem);
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|error| {
                    config_error(format!(
                        "{TLS_CA_FILE}={}: not a PEM file of certificates: {error}",
                        path.display()
                    ))
                })?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(config_error(format!(
                    "{TLS_CA_FILE}={}: holds no usable certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(config_error(format!(
                    "no system certificate authorities found; name one with {TLS_CA_FILE}"
                )));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| config_error(format!("TLS: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_client_can_be_built_next_to_the_other_clients() {
        // The trap of crates.md: two providers in one binary make rustls panic. This builds
        // the configuration the way a TLS connection does, with the system's roots.
        let result = tls_config(&Tls::default());
        match result {
            Ok(config) => assert!(!config.alpn_protocols.contains(&b"h2".to_vec())),
            Err(BusError::Config(message)) => assert!(message.contains("KAFKA_TLS_CA_FILE")),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_with_its_name() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate")?;
        let error = tls_config(&Tls {
            ca_file: Some(path.clone()),
        });
        let Err(BusError::Config(message)) = error else {
            panic!("a file without certificates was accepted");
        };
        assert!(message.contains(&path.display().to_string()), "{message}");
        Ok(())
    }
}
