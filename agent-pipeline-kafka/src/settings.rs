//! How to reach the brokers and how to use them, from the environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Why the settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SettingsError {
    /// The variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// `REDPANDA_BROKERS`.
pub(crate) const BROKERS: &str = "REDPANDA_BROKERS";
/// `KAFKA_CLIENT_ID`.
pub(crate) const CLIENT_ID: &str = "KAFKA_CLIENT_ID";
/// `KAFKA_SASL_MECHANISM`.
pub(crate) const SASL_MECHANISM: &str = "KAFKA_SASL_MECHANISM";
/// `KAFKA_SASL_USERNAME`.
pub(crate) const SASL_USERNAME: &str = "KAFKA_SASL_USERNAME";
/// `KAFKA_SASL_PASSWORD`.
pub(crate) const SASL_PASSWORD: &str = "KAFKA_SASL_PASSWORD";
/// `KAFKA_TLS`.
pub(crate) const TLS: &str = "KAFKA_TLS";
/// `KAFKA_TLS_CA_FILE`.
pub(crate) const TLS_CA_FILE: &str = "KAFKA_TLS_CA_FILE";
/// `KAFKA_PARTITIONS`.
pub(crate) const PARTITIONS: &str = "KAFKA_PARTITIONS";
/// `KAFKA_REPLICATION_FACTOR`.
pub(crate) const REPLICATION_FACTOR: &str = "KAFKA_REPLICATION_FACTOR";
/// `KAFKA_FETCH_WAIT_MS`.
pub(crate) const FETCH_WAIT_MS: &str = "KAFKA_FETCH_WAIT_MS";
/// `KAFKA_LINGER_MS`.
pub(crate) const LINGER_MS: &str = "KAFKA_LINGER_MS";
/// `AGENT_INSTANCE`.
pub(crate) const INSTANCE: &str = "AGENT_INSTANCE";
/// `AGENT_INSTANCES`.
pub(crate) const INSTANCES: &str = "AGENT_INSTANCES";
/// `KAFKA_LEASE_TTL_MS`.
pub(crate) const LEASE_TTL_MS: &str = "KAFKA_LEASE_TTL_MS";
/// `AGENT_MEMBER_ID`.
pub(crate) const MEMBER_ID: &str = "AGENT_MEMBER_ID";

/// The default of `REDPANDA_BROKERS`: a broker on this machine, on Kafka's port.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// A SASL mechanism and its credentials (`Debug` hides the password).
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The SASL mechanisms a managed cluster asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (use it over TLS only).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name as brokers and Kafka tools spell it.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_uppercase().replace('_', "-");
        [Self::Plain, Self::ScramSha256, Self::ScramSha512]
            .into_iter()
            .find(|m| m.name() == text)
    }
}

/// TLS to the brokers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// A PEM file of the certificate authorities to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
}

/// Which partitions of each topic this process consumes: instance `instance` of `instances`
/// owns the partitions `p` with `p % instances == instance`.
///
/// A group never has more useful members than a topic has partitions: with 6 partitions, a
/// seventh worker owns nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// This process's number, from 0.
    pub instance: u32,
    /// How many processes share the work.
    pub instances: u32,
}

impl Default for Ownership {
    fn default() -> Self {
        Self {
            instance: 0,
            instances: 1,
        }
    }
}

impl Ownership {
    /// Instance `instance` of `instances`; refused when `instance` is not below `instances`.
    pub fn new(instance: u32, instances: u32) -> Result<Self, SettingsError> {
        if instances == 0 || instance >= instances {
            return Err(SettingsError {
                variable: INSTANCE,
                problem: format!(
                    "instance {instance} of {instances} does not exist (instances are numbered \
                     from 0 to {INSTANCES} - 1)"
                ),
            });
        }
        Ok(Self {
            instance,
            instances,
        })
    }

    /// Whether this process consumes `partition`.
    pub fn owns(self, partition: u32) -> bool {
        partition % self.instances == self.instance
    }
}

/// How the processes of a group share its partitions when no static [`Ownership`] is given:
/// through leases in the state store. Each member claims its share (the partitions divided by
/// the live members, rounded up) for `ttl` and renews the claims every third of it; when a
/// member stops renewing (it died), its partitions are free once `ttl` has passed and the
/// others take them over. A member that stops cleanly gives its partitions up at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeases {
    /// `KAFKA_LEASE_TTL_MS` (default 10 000): how long a claim holds without renewal, which
    /// is also how long a dead member's partitions wait before another takes them.
    pub ttl: Duration,
    /// `AGENT_MEMBER_ID`: this process in the lease table; it must differ between processes.
    /// Unset, each [`KafkaBus`](crate::KafkaBus) makes one of its own from the host name,
    /// the process id and a random suffix.
    pub member: Option<String>,
}

impl PartitionLeases {
    /// The default time to live of a claim.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

    /// Claims for `ttl`, under a member id made when the bus connects.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, member: None }
    }

    /// The member id to use: the one given, else a new one of this process's own.
    pub(crate) fn member_id(&self) -> String {
        self.member.clone().unwrap_or_else(default_member_id)
    }

    /// How often claims are renewed and the shares balanced again.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

/// `<host>-<pid>-<random>`: unique per process, readable in the lease table.
fn default_member_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let random = std::collections::hash_map::RandomState::new();
    let suffix = std::hash::BuildHasher::hash_one(&random, std::time::SystemTime::now()) & 0xffff;
    format!("{host}-{}-{suffix:04x}", std::process::id())
}

/// Everything [`KafkaBus`](crate::KafkaBus) needs: the brokers and how to reach them, how
/// topics are created, and which partitions this process owns.
///
/// ```
/// use agent_pipeline_kafka::KafkaSettings;
/// let settings = KafkaSettings::from_lookup(|name| match name {
///     "REDPANDA_BROKERS" => Some("10.0.0.1:9092, 10.0.0.2:9092".to_owned()),
///     "AGENT_INSTANCES" => Some("2".to_owned()),
///     "AGENT_INSTANCE" => Some("1".to_owned()),
///     _ => None,
/// })
/// .unwrap();
/// assert_eq!(settings.brokers, ["10.0.0.1:9092", "10.0.0.2:9092"]);
/// assert!(settings.ownership.owns(3) && !settings.ownership.owns(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `REDPANDA_BROKERS`: `host:port` of the bootstrap brokers.
    pub brokers: Vec<String>,
    /// `KAFKA_CLIENT_ID` (default `agent-pipeline`), shown in the brokers' logs and metrics.
    pub client_id: String,
    /// `KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`.
    pub sasl: Option<Sasl>,
    /// `KAFKA_TLS=true`, with `KAFKA_TLS_CA_FILE` optionally.
    pub tls: Option<Tls>,
    /// `KAFKA_PARTITIONS` (default 6): partitions of each topic this bus creates.
    pub partitions: u32,
    /// `KAFKA_REPLICATION_FACTOR` (default 1; 3 on a real cluster).
    pub replication_factor: u16,
    /// `KAFKA_FETCH_WAIT_MS` (default 500): how long the broker may hold a fetch that finds
    /// nothing new. Kafka and Redpanda answer as soon as data arrives, so this only bounds
    /// idle polling; a broker that does not answer early (tansu) adds up to this much latency
    /// to each hop.
    pub fetch_wait: Duration,
    /// `KAFKA_LINGER_MS` (default 5): how long a produce waits for others to share its batch.
    pub linger: Duration,
    /// `AGENT_INSTANCE` and `AGENT_INSTANCES`: the partitions this process consumes, when
    /// [`Self::leases`] is `None`.
    pub ownership: Ownership,
    /// Partitions shared out by leases (the default); `None` when `AGENT_INSTANCE` or
    /// `AGENT_INSTANCES` is set, and [`Self::ownership`] decides.
    pub leases: Option<PartitionLeases>,
    /// The largest message published (default 1 MiB, the brokers' default
    /// `message.max.bytes`); larger ones are refused before they reach the broker.
    pub max_message_bytes: usize,
    /// How long a broker operation keeps retrying while the broker is unreachable before it
    /// fails (`None`: until it answers, what a service wants; a command line wants seconds).
    pub give_up_after: Option<Duration>,
}

impl KafkaSettings {
    /// Every variable these settings read, with its default (empty: unset).
    pub const VARIABLES: [(&'static str, &'static str); 15] = [
        (BROKERS, DEFAULT_BROKERS),
        (CLIENT_ID, "agent-pipeline"),
        (SASL_MECHANISM, ""),
        (SASL_USERNAME, ""),
        (SASL_PASSWORD, ""),
        (TLS, "false"),
        (TLS_CA_FILE, ""),
        (PARTITIONS, "6"),
        (REPLICATION_FACTOR, "1"),
        (FETCH_WAIT_MS, "500"),
        (LINGER_MS, "5"),
        (INSTANCE, "0"),
        (INSTANCES, "1"),
        (LEASE_TTL_MS, "10000"),
        (MEMBER_ID, ""),
    ];

    /// The defaults, with `brokers`.
    pub fn new(brokers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            brokers: brokers.into_iter().map(Into::into).collect(),
            client_id: "agent-pipeline".to_owned(),
            sasl: None,
            tls: None,
            partitions: 6,
            replication_factor: 1,
            fetch_wait: Duration::from_millis(500),
            linger: Duration::from_millis(5),
            ownership: Ownership::default(),
            leases: Some(PartitionLeases::new(PartitionLeases::DEFAULT_TTL)),
            max_message_bytes: 1024 * 1024,
            give_up_after: None,
        }
    }

    /// The settings named by `lookup(variable)` (see [`Self::VARIABLES`]); unset and empty
    /// variables take their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let number = |name: &'static str, default: u64, min: u64, max: u64| match get(name) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| SettingsError {
                    variable: name,
                    problem: format!("must be a whole number from {min} to {max}, not {text:?}"),
                }),
        };
        let brokers: Vec<String> = get(BROKERS)
            .unwrap_or_else(|| DEFAULT_BROKERS.to_owned())
            .split(',')
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        if let Some(bad) = brokers.iter().find(|b| !looks_like_host_port(b)) {
            return Err(SettingsError {
                variable: BROKERS,
                problem: format!("{bad:?} is not host:port (brokers are comma-separated)"),
            });
        }
        let sasl = match get(SASL_MECHANISM) {
            None => None,
            Some(text) => {
                let mechanism = SaslMechanism::parse(&text).ok_or_else(|| SettingsError {
                    variable: SASL_MECHANISM,
                    problem: format!("must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, not {text:?}"),
                })?;
                let required = |name: &'static str| {
                    get(name).ok_or_else(|| SettingsError {
                        variable: name,
                        problem: format!("is required with {SASL_MECHANISM}"),
                    })
                };
                Some(Sasl {
                    mechanism,
                    username: required(SASL_USERNAME)?,
                    password: required(SASL_PASSWORD)?,
                })
            }
        };
        let tls_on = match get(TLS).map(|t| t.trim().to_ascii_lowercase()) {
            None => false,
            Some(t) if ["true", "1", "yes", "on"].contains(&t.as_str()) => true,
            Some(t) if ["false", "0", "no", "off"].contains(&t.as_str()) => false,
            Some(t) => {
                return Err(SettingsError {
                    variable: TLS,
                    problem: format!("must be true or false, not {t:?}"),
                });
            }
        };
        let ca_file = get(TLS_CA_FILE).map(PathBuf::from);
        if ca_file.is_some() && !tls_on {
            return Err(SettingsError {
                variable: TLS_CA_FILE,
                problem: format!("is set but {TLS} is not true"),
            });
        }
        let instances = number(INSTANCES, 1, 1, 10_000)?;
        let instance = number(INSTANCE, 0, 0, 9_999)?;
        let ownership = Ownership::new(instance as u32, instances as u32)?;
        let static_ownership = get(INSTANCE).is_some() || get(INSTANCES).is_some();
        let leases = if static_ownership {
            None
        } else {
            let mut leases = PartitionLeases::new(Duration::from_millis(number(
                LEASE_TTL_MS,
                10_000,
                300,
                600_000,
            )?));
            leases.member = get(MEMBER_ID).map(|member| member.trim().to_owned());
            Some(leases)
        };
        Ok(Self {
            brokers,
            client_id: get(CLIENT_ID)
                .map(|c| c.trim().to_owned())
                .unwrap_or_else(|| "agent-pipeline".to_owned()),
            sasl,
            tls: tls_on.then_some(Tls { ca_file }),
            partitions: number(PARTITIONS, 6, 1, 10_000)? as u32,
            replication_factor: number(REPLICATION_FACTOR, 1, 1, 100)? as u16,
            fetch_wait: Duration::from_millis(number(FETCH_WAIT_MS, 500, 1, 60_000)?),
            linger: Duration::from_millis(number(LINGER_MS, 5, 0, 10_000)?),
            ownership,
            leases,
            ..Self::new(Vec::<String>::new())
        })
    }

    /// The settings named by the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// `host:port` with a port number; IPv6 hosts in brackets.
fn looks_like_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_reach_a_local_broker() -> Result<(), SettingsError> {
        let settings = KafkaSettings::from_lookup(|_| None)?;
        assert_eq!(settings.brokers, [DEFAULT_BROKERS]);
        assert_eq!(settings.partitions, 6);
        assert_eq!(settings.replication_factor, 1);
        assert_eq!(settings.ownership, Ownership::default());
        assert_eq!(
            settings.leases.as_ref().map(|l| l.ttl),
            Some(PartitionLeases::DEFAULT_TTL),
            "partitions are shared by leases unless instances are given"
        );
        assert!(settings.sasl.is_none() && settings.tls.is_none());
        assert_eq!(settings, KafkaSettings::new([DEFAULT_BROKERS]));
        for (name, default) in KafkaSettings::VARIABLES {
            let explicit = KafkaSettings::from_lookup(|n| (n == name).then(|| default.to_owned()))?;
            if [INSTANCE, INSTANCES].contains(&name) {
                assert!(
                    explicit.leases.is_none(),
                    "{name} chooses static ownership, even at its default"
                );
                continue;
            }
            assert_eq!(explicit, settings, "{name}={default:?} is not the default");
        }
        Ok(())
    }

    #[test]
    fn partition_leases_take_their_time_to_live_and_member_id() -> Result<(), SettingsError> {
        let settings = KafkaSettings::from_lookup(lookup(&[
            (LEASE_TTL_MS, "3000"),
            (MEMBER_ID, " worker-a "),
        ]))?;
        let leases = settings.leases.ok_or_else(|| SettingsError {
            variable: LEASE_TTL_MS,
            problem: "leases are the default".to_owned(),
        })?;
        assert_eq!(leases.ttl, Duration::from_secs(3));
        assert_eq!(leases.renew_every(), Duration::from_secs(1));
        assert_eq!(leases.member_id(), "worker-a");
        let unnamed = PartitionLeases::new(leases.ttl);
        assert_ne!(
            unnamed.member_id(),
            unnamed.member_id(),
            "each bus needs a member id of its own"
        );
        let error = KafkaSettings::from_lookup(lookup(&[(LEASE_TTL_MS, "5")]))
            .err()
            .map(|e| e.variable);
        assert_eq!(
            error,
            Some(LEASE_TTL_MS),
            "a time to live under 300 ms is refused"
        );
        Ok(())
    }

    #[test]
    fn every_variable_is_read() -> Result<(), SettingsError> {
        let settings = KafkaSettings::from_lookup(lookup(&[
            (BROKERS, "a:1,b:2 , [::1]:9093"),
            (CLIENT_ID, "me"),
            (SASL_MECHANISM, "scram-sha-512"),
            (SASL_USERNAME, "user"),
            (SASL_PASSWORD, "s3cret"),
            (TLS, "true"),
            (TLS_CA_FILE, "/etc/ca.pem"),
            (PARTITIONS, "12"),
            (REPLICATION_FACTOR, "3"),
            (FETCH_WAIT_MS, "50"),
            (LINGER_MS, "0"),
            (INSTANCE, "2"),
            (INSTANCES, "3"),
        ]))?;
        assert_eq!(settings.brokers, ["a:1", "b:2", "[::1]:9093"]);
        assert_eq!(settings.client_id, "me");
        let sasl = settings.sasl.clone().ok_or_else(|| SettingsError {
            variable: SASL_MECHANISM,
            problem: "not read".into(),
        })?;
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert!(
            !format!("{settings:?}").contains("s3cret"),
            "Debug shows the password"
        );
        assert_eq!(
            settings.tls,
            Some(Tls {
                ca_file: Some("/etc/ca.pem".into())
            })
        );
        assert_eq!(settings.partitions, 12);
        assert_eq!(settings.replication_factor, 3);
        assert_eq!(settings.fetch_wait, Duration::from_millis(50));
        assert_eq!(settings.linger, Duration::ZERO);
        assert_eq!(settings.ownership, Ownership::new(2, 3)?);
        Ok(())
    }

    #[test]
    fn mistakes_are_named() {
        let fails = |pairs: &'static [(&'static str, &'static str)], variable: &str| {
            match KafkaSettings::from_lookup(lookup(pairs)) {
                Err(error) => assert_eq!(error.variable, variable, "{error}"),
                Ok(settings) => panic!("{pairs:?} accepted: {settings:?}"),
            }
        };
        fails(&[(BROKERS, "localhost")], BROKERS);
        fails(&[(SASL_MECHANISM, "GSSAPI")], SASL_MECHANISM);
        fails(
            &[(SASL_MECHANISM, "PLAIN"), (SASL_USERNAME, "u")],
            SASL_PASSWORD,
        );
        fails(&[(TLS, "maybe")], TLS);
        fails(&[(TLS_CA_FILE, "/ca.pem")], TLS_CA_FILE);
        fails(&[(PARTITIONS, "0")], PARTITIONS);
        fails(&[(INSTANCE, "2"), (INSTANCES, "2")], INSTANCE);
        fails(&[(FETCH_WAIT_MS, "soon")], FETCH_WAIT_MS);
    }

    #[test]
    fn instances_share_the_partitions() -> Result<(), SettingsError> {
        let owners: Vec<Vec<u32>> = (0..3)
            .map(|i| {
                let ownership = Ownership::new(i, 3)?;
                Ok((0..7).filter(|p| ownership.owns(*p)).collect())
            })
            .collect::<Result<_, SettingsError>>()?;
        assert_eq!(owners, [vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
        Ok(())
    }
}
