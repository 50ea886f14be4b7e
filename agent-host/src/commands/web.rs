//! `web`: the web UI and JSON API (with a broker, and the mirror); and the server that `run`
//! shares with it.

use std::net::SocketAddr;
use std::process::ExitCode;

use agent_pipeline::{Pipeline, Service};
use anyhow::{Context, Result};

use super::services::{Process, serve};
use crate::config::{BusKind, Config};
use crate::web::{self, WebSettings, WebState};

/// Serves the UI and API over `DATA_DIR` until Ctrl-C or SIGTERM. On the Kafka bus it also
/// runs the mirror (the report and dead-letter topics to `reports.jsonl`,
/// `dead_letters.jsonl` and the live UI) and takes work; on the embedded default it runs no
/// service and is read-only.
pub(crate) async fn web(config: &Config) -> Result<ExitCode> {
    let services = match config.bus {
        BusKind::Memory => Vec::new(),
        BusKind::Kafka => vec![Service::Mirror],
    };
    let process = Process {
        name: "agent-host web".to_owned(),
        services,
        web: true,
        bus: config.bus,
    };
    serve(config, &process).await
}

/// The web server, bound and not yet serving.
#[derive(Debug)]
pub(super) struct WebServer {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    state: WebState,
}

impl WebServer {
    /// Binds `WEB_ADDR` (or `--listen`), saying clearly when that fails.
    pub(super) async fn bind(
        config: &Config,
        pipeline: Pipeline,
        settings: WebSettings,
    ) -> Result<Self> {
        let wanted = config.web.addr;
        let listener = tokio::net::TcpListener::bind(wanted)
            .await
            .with_context(|| {
                format!(
                    "cannot serve the web UI on {wanted} (is another agent-host running? choose \
                     another address with --listen or WEB_ADDR)"
                )
            })?;
        let address = listener
            .local_addr()
            .context("cannot read the web server's address")?;
        Ok(Self {
            listener,
            address,
            state: WebState::new(pipeline, settings),
        })
    }

    /// Whether the server takes no work (enqueue, replay, re-drive).
    pub(super) fn read_only(&self) -> bool {
        self.state.settings().read_only.is_some()
    }

    /// `http://` and the bound address.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Serves until `stop` completes, then lets the requests under way finish.
    pub(super) async fn serve_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        web::serve(self.listener, self.state, stop)
            .await
            .context("the web server failed")
    }
}
