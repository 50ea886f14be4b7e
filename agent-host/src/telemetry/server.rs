//! `METRICS_ADDR`: a small HTTP server of its own for `/metrics` and `/healthz`, so that the
//! processes without a web UI (`planner`, `worker`, `orchestrator`, `ci-monitor`) can be
//! scraped too.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::scrape;

/// Where a process serves its metrics on their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MetricsSettings {
    /// `METRICS_ADDR`, e.g. `127.0.0.1:9464`; unset, no such server runs (a process with the
    /// web UI still serves `/metrics` there).
    pub(crate) addr: Option<SocketAddr>,
}

impl MetricsSettings {
    /// The variable that sets [`MetricsSettings::addr`].
    pub(crate) const ADDR: &'static str = "METRICS_ADDR";

    /// Reads the settings through `lookup` (which gives `None` for an unset or empty value).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let addr = lookup(Self::ADDR)
            .map(|text| {
                text.trim().parse().with_context(|| {
                    format!(
                        "{} must be an address and port such as 127.0.0.1:9464, not {text:?}",
                        Self::ADDR
                    )
                })
            })
            .transpose()?;
        Ok(Self { addr })
    }
}

/// The metrics server, bound and not yet serving.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    token: Option<Arc<str>>,
}

impl MetricsServer {
    /// Binds `addr`, saying clearly when that fails. With `token` (`WEB_TOKEN`), `/metrics`
    /// wants it as a bearer token.
    pub(crate) async fn bind(addr: SocketAddr, token: Option<&str>) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot serve the metrics on {addr} (is another process using it? choose another \
                 address with {})",
                MetricsSettings::ADDR
            )
        })?;
        let address = listener
            .local_addr()
            .context("cannot read the metrics server's address")?;
        Ok(Self {
            listener,
            address,
            token: token.map(Arc::from),
        })
    }

    /// The URL of its `/metrics`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/metrics", self.address)
    }

    /// Serves in the background until [`RunningMetricsServer::stop`].
    pub(crate) fn start(self) -> RunningMetricsServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(self.token);
        let task = tokio::spawn(async move {
            let served = axum::serve(self.listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the metrics server failed");
            }
        });
        RunningMetricsServer { stop, task }
    }
}

/// `/metrics` and `/healthz`.
fn router(token: Option<Arc<str>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(token)
}

async fn metrics(State(token): State<Option<Arc<str>>>, headers: HeaderMap) -> Response {
    scrape(token.as_deref(), &headers)
}

/// A metrics server serving in the background.
#[derive(Debug)]
pub(crate) struct RunningMetricsServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningMetricsServer {
    /// Stops taking connections and lets the scrapes under way finish.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addr_is_an_address_and_port_or_unset() -> Result<()> {
        let settings = |value: Option<&str>| {
            let value = value.map(str::to_owned);
            MetricsSettings::from_lookup(move |_| value.clone())
        };
        assert_eq!(settings(None)?.addr, None);
        assert_eq!(
            settings(Some(" 127.0.0.1:9464 "))?.addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        let error = settings(Some("9464")).err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("METRICS_ADDR")),
            "{error:?}"
        );
        Ok(())
    }
}
