//! With the `otel` feature: the tracing spans (`message`, `plan`, `step`, `apply` …, each with
//! its `task_id`) exported over OTLP/gRPC to `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g.
//! `http://127.0.0.1:4317`), when that is set. The exporter reads the other `OTEL_*` variables
//! itself (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME` …).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Either switches the export on.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// The service name spans carry unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "agent-host";

/// Keeps the export running; when dropped at the end of the program, sends the spans still
/// buffered.
#[derive(Debug)]
pub(crate) struct OtelGuard(SdkTracerProvider);

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Err(error) = self.0.shutdown() {
            eprintln!("warning: the last spans could not be exported over OTLP: {error}");
        }
    }
}

/// The layer that exports spans, when an endpoint is configured (`Ok(None)` when not). Call
/// it inside the tokio runtime: the gRPC client lives there.
pub(crate) fn layer<S>() -> Result<Option<(impl Layer<S>, OtelGuard)>, String>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let configured = ENDPOINT_VARIABLES
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()));
    if !configured {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|error| error.to_string())?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(SERVICE_NAME);
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok(Some((layer, OtelGuard(provider))))
}
