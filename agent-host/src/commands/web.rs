//! `web`: the web UI and JSON API alone; and the server that `run` shares with it.

use std::net::SocketAddr;
use std::process::ExitCode;

use agent_pipeline::Pipeline;
use anyhow::{Context, Result};

use super::build_pipeline;
use super::run::Interrupt;
use crate::config::Config;
use crate::web::{self, WebSettings, WebState};

/// Why `agent-host web` on its own takes no work on the embedded default.
const READ_ONLY_ON_MEMORY_BUS: &str = "this `agent-host web` process serves the UI alone, and on \
     the embedded default the bus lives inside the process of `agent-host run`: tasks enqueued \
     here would reach no service. Use the UI of `agent-host run` to enqueue and replay.";

/// Serves the UI and API over `DATA_DIR` until Ctrl-C, without running any service.
pub(crate) async fn web(config: &Config) -> Result<ExitCode> {
    let pipeline = build_pipeline(config, false).await?;
    let read_only = (!pipeline.bus().is_durable()).then(|| READ_ONLY_ON_MEMORY_BUS.to_owned());
    let settings = WebSettings {
        token: config.web.token.clone(),
        read_only,
    };
    let interrupt = Interrupt::listen()?;
    let server = WebServer::bind(config, pipeline, settings).await?;
    println!(
        "agent-host web: the UI and JSON API over {}",
        config.data_dir.display()
    );
    println!("  web:     {}/", server.url());
    if server.state.settings().read_only.is_some() {
        println!(
            "  read-only: the embedded bus lives in `agent-host run`, so enqueue and replay \
             are off here"
        );
    }
    println!("Press Ctrl-C to stop.");
    server.serve_until(interrupt.received()).await?;
    println!("stopped");
    Ok(ExitCode::SUCCESS)
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
