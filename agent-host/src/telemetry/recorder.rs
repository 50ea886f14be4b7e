//! The process's Prometheus recorder: installed once, the global recorder of the `metrics`
//! facade, with histogram buckets for durations in seconds and for the cost of tasks in US
//! dollars.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The upper bounds of the histogram buckets, in seconds: from a millisecond (a hop on the
/// in-memory bus) to ten minutes (the default step timeout). Every histogram of the pipeline
/// but the cost of tasks is a duration in seconds.
pub(crate) const BUCKETS_SECONDS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// The upper bounds of the buckets of the cost of a task, in US dollars: from a hundredth of
/// a cent (a small model's task) to a hundred dollars (a runaway one), so that budgets such
/// as $0.10, $1 or $10 fall on a bound.
pub(crate) const BUCKETS_USD: [f64; 14] = [
    0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0,
];

/// How often recorded histogram samples are folded into their buckets between scrapes, so
/// that a process nobody scrapes does not keep every sample.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle. The first call installs the recorder as the global one,
/// describes the pipeline's metrics and starts the upkeep; later calls return the same handle.
pub(crate) fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // Without buckets the exporter renders summaries; the buckets are never empty, so
        // the fallback (summaries) is there for the compiler only.
        let cost = Matcher::Full(agent_pipeline::metrics::TASK_COST_USD.to_owned());
        let builder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS_SECONDS)
            .and_then(|builder| builder.set_buckets_for_metric(cost, &BUCKETS_USD))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed in this process: /metrics shows none of \
                 the pipeline's metrics"
            );
        }
        agent_pipeline::metrics::describe();
        agent_pipeline::llm::metrics::describe();
        start_upkeep(handle.clone());
        handle
    })
}

/// Folds histogram samples into buckets every [`UPKEEP_INTERVAL`], on a thread of its own: it
/// outlives any runtime and costs a wake-up every few seconds.
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(error) = started {
        tracing::warn!(%error, "cannot start the metrics upkeep; histograms are folded at each scrape only");
    }
}
