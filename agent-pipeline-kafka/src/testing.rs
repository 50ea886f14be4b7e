//! A real broker for tests (feature `test-util`): the brokers of `REDPANDA_BROKERS` when it is
//! set, else a throw-away [tansu](https://github.com/tansu-io/tansu) broker on a free
//! loopback port with SQLite storage in a temporary directory.
//!
//! Tests that need a broker call [`TestBroker::start`]; without a broker (no
//! `REDPANDA_BROKERS`, no `tansu` on the `PATH`) it returns `None` so that the test can say it
//! skipped, except under `CI=true`, where a missing broker is a failure. Each test uses its
//! own topics ([`topic_prefix`]), so tests may share a broker.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{KafkaSettings, Topics};

/// How long a starting broker may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A broker for one test: external (`REDPANDA_BROKERS`) or a tansu process this owns.
#[derive(Debug)]
pub struct TestBroker {
    brokers: String,
    tansu: Option<Tansu>,
}

#[derive(Debug)]
struct Tansu {
    binary: PathBuf,
    address: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestBroker {
    /// The time to live of partition leases in [`Self::settings`] and [`Self::env`].
    pub const LEASE_TTL: Duration = Duration::from_millis(1500);

    /// A broker to test against, or `None` (after printing why) when there is none and
    /// `CI` is not `true`.
    ///
    /// # Panics
    /// When no broker can be had under `CI=true`, or when tansu does not start.
    pub fn start() -> Option<Self> {
        if let Some(brokers) = std::env::var("REDPANDA_BROKERS")
            .ok()
            .filter(|b| !b.trim().is_empty())
        {
            return Some(Self {
                brokers,
                tansu: None,
            });
        }
        let Some(binary) = find_tansu() else {
            let message = "no broker for this test: set REDPANDA_BROKERS, or install tansu \
                 (cargo install tansu --version 0.6.0 --locked --features dynostore,libsql; \
                 scripts/test-all does)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{message} (CI=true: a missing broker fails the run)"
            );
            eprintln!("SKIPPED: {message}");
            return None;
        };
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("cannot create a directory for tansu: {error}"),
        };
        let mut tansu = Tansu {
            binary,
            address: free_loopback_port(),
            dir,
            child: None,
        };
        tansu.launch();
        Some(Self {
            brokers: tansu.address.to_string(),
            tansu: Some(tansu),
        })
    }

    /// `host:port` of the broker, as `REDPANDA_BROKERS` wants it.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Settings for this broker, tuned for tests: 3 partitions per topic, a 50 ms fetch
    /// wait (tansu answers a waiting fetch only when the wait ends) and partition leases of
    /// [`Self::LEASE_TTL`], so that a killed member's partitions move on quickly.
    pub fn settings(&self) -> KafkaSettings {
        let mut settings = KafkaSettings::new(self.brokers.split(','));
        settings.partitions = 3;
        settings.fetch_wait = Duration::from_millis(50);
        settings.leases = Some(crate::PartitionLeases::new(Self::LEASE_TTL));
        settings.give_up_after = Some(Duration::from_secs(30));
        settings
    }

    /// The environment variables that point an `agent-host` process at this broker with the
    /// settings of [`Self::settings`].
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REDPANDA_BROKERS", self.brokers.clone()),
            ("KAFKA_PARTITIONS", "3".to_owned()),
            ("KAFKA_FETCH_WAIT_MS", "50".to_owned()),
            (
                "KAFKA_LEASE_TTL_MS",
                Self::LEASE_TTL.as_millis().to_string(),
            ),
        ]
    }

    /// [`Self::env`] plus the topic variables (`TASK_TOPIC` …) naming the default topics under
    /// `prefix`: everything a process needs to share a test's broker and topics.
    pub fn env_with_topics(&self, prefix: &str) -> Vec<(String, String)> {
        let broker = self
            .env()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value));
        let topics = Topics::VARIABLES
            .iter()
            .map(|(name, default)| ((*name).to_owned(), format!("{prefix}{default}")));
        broker.chain(topics).collect()
    }

    /// Stops the broker (SIGKILL: as abruptly as a crash) and starts it again on the same
    /// port and storage, to test reconnecting. Returns `false` for an external broker, which
    /// this cannot restart.
    pub fn restart_after(&mut self, down_for: Duration) -> bool {
        let Some(tansu) = &mut self.tansu else {
            return false;
        };
        tansu.kill();
        std::thread::sleep(down_for);
        tansu.launch();
        true
    }

    /// Whether this can stop and restart the broker: only a tansu process this started, never
    /// an external broker (`REDPANDA_BROKERS`).
    pub fn can_restart(&self) -> bool {
        self.tansu.is_some()
    }

    /// Starts a broker stopped by [`Self::kill`] again, on the same port and storage, and
    /// waits until it accepts connections. Returns `false` for an external broker; does
    /// nothing (and returns `true`) when the broker runs.
    ///
    /// # Panics
    /// When tansu does not start again.
    pub fn restart(&mut self) -> bool {
        let Some(tansu) = &mut self.tansu else {
            return false;
        };
        if tansu.child.is_none() {
            tansu.launch();
        }
        true
    }

    /// Stops a broker this started (SIGKILL), to test what happens while it is away. A later
    /// [`Self::restart`] or [`Self::restart_after`] brings it back.
    pub fn kill(&mut self) -> bool {
        match &mut self.tansu {
            Some(tansu) => {
                tansu.kill();
                true
            }
            None => false,
        }
    }
}

impl Tansu {
    fn launch(&mut self) {
        let log = self.dir.path().join("tansu.log");
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|file| Ok((file.try_clone()?, file)));
        let (stdout, stderr) = match output {
            Ok(pair) => pair,
            Err(error) => panic!("cannot open {}: {error}", log.display()),
        };
        let url = format!("tcp://{}", self.address);
        let spawned = Command::new(&self.binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) => panic!("cannot start {}: {error}", self.binary.display()),
        };
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect_timeout(&self.address, Duration::from_millis(200)).is_err() {
            if started.elapsed() > READY_WITHIN {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "tansu did not accept connections on {} within {READY_WITHIN:?}; its log:\n{tail}",
                    self.address
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// tansu from `TANSU` (a path), the `PATH`, or cargo's bin directory.
fn find_tansu() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TANSU").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|home| home.join("bin"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .map(|dir| dir.join("tansu"))
        .find(|path| path.is_file())
}

/// A loopback address with a port that was free a moment ago.
fn free_loopback_port() -> SocketAddr {
    match TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()) {
        Ok(address) => address,
        Err(error) => panic!("cannot find a free port: {error}"),
    }
}

/// A topic prefix no other test uses: `t<pid>-<time>-<n>-`.
pub fn topic_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t{}-{nanos}-{n}-", std::process::id())
}

/// The default topics under a fresh [`topic_prefix`].
pub fn test_topics() -> Topics {
    Topics::default().with_prefix(&topic_prefix())
}
