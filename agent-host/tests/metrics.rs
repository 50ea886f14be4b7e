//! `GET /metrics`: a running host's metrics in Prometheus's text format after a task, guarded
//! by `WEB_TOKEN` as a bearer token; what a priced run cost, by model, stage and task, and the
//! tasks a budget stopped; `METRICS_ADDR`, the metrics server of a process of its own; and the
//! documentation of every metric.

mod common;

use common::http::Answer;
use common::openai::ChatServer;
use common::{HELLO, Host, Sandbox};

/// `GET path` on `base` (`http://host:port`), with a bearer token if given.
fn get(base: &str, path: &str, bearer: Option<&str>) -> Answer {
    common::http::request(base, "GET", path, bearer, None)
}

/// The value of the sample `series` (name and labels, as Prometheus prints them).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[test]
fn a_host_serves_the_step_durations_by_stage_to_a_scraper_with_its_token() {
    let token = "scrape-t0ken";
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["run", "--listen", "127.0.0.1:0"]);
    command.env("WEB_TOKEN", token).env_remove("METRICS_ADDR");
    let host = Host::start(command);
    assert!(
        host.banner
            .contains(&format!("metrics: {}/metrics", host.url)),
        "the banner says where the metrics are:\n{}",
        host.banner
    );

    let mut send = sandbox.command(&["send", "--text", HELLO, "--wait", "--url", &host.url]);
    send.env("WEB_TOKEN", token);
    let sent = common::run(send);
    assert!(sent.status.success(), "{sent}");

    // A scraper sends the token as a bearer header; without it, or with another, it gets 401
    // (not the login page a browser is sent to).
    for wrong in [None, Some("not-the-token")] {
        let refused = get(&host.url, "/metrics", wrong);
        assert_eq!(refused.status, 401, "{wrong:?}: {}", refused.body);
        assert!(refused.headers.contains("www-authenticate: bearer"));
        assert!(
            !refused.body.contains("agent_pipeline_"),
            "{}",
            refused.body
        );
    }
    let scraped = get(&host.url, "/metrics", Some(token));
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    assert!(
        scraped
            .headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        scraped.headers
    );
    let metrics = &scraped.body;
    assert!(
        metrics.contains("# TYPE agent_pipeline_step_duration_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# HELP agent_pipeline_step_duration_seconds How long each step ran"),
        "the metrics are described:\n{metrics}"
    );
    for stage in ["design", "implement", "test", "review"] {
        let series = format!(
            "agent_pipeline_step_duration_seconds_count{{stage=\"{stage}\",outcome=\"succeeded\"}}"
        );
        assert_eq!(sample(metrics, &series), Some(1.0), "{series}:\n{metrics}");
        let longest = format!(
            "agent_pipeline_step_duration_seconds_bucket{{stage=\"{stage}\",outcome=\"succeeded\",le=\"600\"}}"
        );
        assert_eq!(
            sample(metrics, &longest),
            Some(1.0),
            "buckets in seconds up to 10 minutes:\n{metrics}"
        );
    }
    assert_eq!(
        sample(metrics, "agent_pipeline_tasks_total{status=\"received\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(metrics, "agent_pipeline_tasks_total{status=\"done\"}"),
        Some(1.0),
        "{metrics}"
    );
    let lag = sample(
        metrics,
        "agent_pipeline_queue_lag_seconds_count{topic=\"step_requests\"}",
    );
    assert!(
        lag.is_some_and(|count| count >= 4.0),
        "one lag per request at least:\n{metrics}"
    );
    assert_eq!(
        sample(metrics, "agent_pipeline_steps_in_flight{stage=\"review\"}"),
        Some(0.0),
        "{metrics}"
    );

    let stopped = host.interrupt();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
}

#[test]
fn a_priced_run_shows_what_it_cost_by_model_stage_and_task() {
    let (_runtime, server) = ChatServer::start_on_own_runtime();
    let sandbox = Sandbox::new();
    let mut env = server.env("model-a");
    env.push(("LLM_PRICES", "model-a=1/4".to_owned()));
    env.push(("EXECUTE_CODE", "false".to_owned()));
    let host = sandbox.start_host_with(env);
    assert!(
        host.banner
            .contains("model-a costs $1 in / $4 out per million tokens"),
        "the banner says what the model costs:\n{}",
        host.banner
    );

    let done = sandbox.run(&["send", "--text", HELLO, "--wait", "--url", &host.url]);
    assert!(done.status.success(), "{done}");
    let stopped = sandbox.run(&[
        "send",
        "--text",
        HELLO,
        "--max-tokens",
        "10",
        "--url",
        &host.url,
    ]);
    assert_eq!(stopped.code(), Some(1), "{stopped}");

    let scraped = get(&host.url, "/metrics", None);
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    let metrics = &scraped.body;
    let by_model = sample(
        metrics,
        "agent_pipeline_llm_cost_usd_total{model=\"model-a\"}",
    );
    assert!(by_model.is_some_and(|usd| usd > 0.0), "{metrics}");
    let mut by_stage = 0.0;
    for stage in ["design", "implement", "test", "review"] {
        let series = format!("agent_pipeline_step_cost_usd_total{{stage=\"{stage}\"}}");
        let usd = sample(metrics, &series);
        assert!(usd.is_some_and(|usd| usd > 0.0), "{series}:\n{metrics}");
        by_stage += usd.unwrap_or_default();
    }
    // Both sums come from the same call records: they agree.
    assert!(
        by_model.is_some_and(|usd| (usd - by_stage).abs() < 1e-9),
        "{by_model:?} by model, {by_stage} by stage"
    );
    assert_eq!(
        sample(
            metrics,
            "agent_pipeline_task_cost_usd_count{status=\"done\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let task_cost = sample(metrics, "agent_pipeline_task_cost_usd_sum{status=\"done\"}");
    assert!(task_cost.is_some_and(|usd| usd > 0.0), "{metrics}");
    // The buckets are in dollars: a task of a few thousand tokens at $1 / $4 per million
    // costs well under a cent.
    assert_eq!(
        sample(
            metrics,
            "agent_pipeline_task_cost_usd_bucket{status=\"done\",le=\"0.01\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            metrics,
            "agent_pipeline_tasks_stopped_total{reason=\"budget_exceeded\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            metrics,
            "agent_pipeline_task_cost_usd_count{status=\"error\"}"
        ),
        Some(1.0),
        "{metrics}"
    );

    let stopped = host.interrupt();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
}

#[test]
fn metrics_addr_serves_the_metrics_and_a_health_probe_on_an_address_of_their_own() {
    let sandbox = Sandbox::new();
    let host = sandbox.start_host(&[("METRICS_ADDR", "127.0.0.1:0")]);
    let metrics_url = host
        .banner
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("metrics:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics line in the banner:\n{}", host.banner))
        .to_owned();
    let base = metrics_url
        .strip_suffix("/metrics")
        .unwrap_or_else(|| panic!("not a /metrics URL: {metrics_url}"));
    assert_ne!(base, host.url, "a server of its own");

    let scraped = get(base, "/metrics", None);
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    // The consumers are registered as they start: the task topic has nothing in handling.
    assert_eq!(
        sample(
            &scraped.body,
            "agent_pipeline_unacked_messages{topic=\"agent_tasks\"}"
        ),
        Some(0.0),
        "{}",
        scraped.body
    );
    let health = get(base, "/healthz", None);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(get(base, "/", None).status, 404, "nothing else is served");

    let stopped = host.interrupt();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
}

#[test]
fn a_wrong_metrics_addr_is_named_in_the_error() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["run", "--listen", "127.0.0.1:0"]);
    command.env("METRICS_ADDR", "9464");
    let output = common::run(command);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(output.stderr.contains("METRICS_ADDR"), "{output}");
}

#[test]
fn docs_metrics_md_describes_every_metric() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md");
    let core = agent_pipeline::metrics::NAMES.iter();
    for name in core.chain(agent_pipeline::llm::metrics::ALL.iter()) {
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} is not documented"
        );
    }
    for variable in [
        "METRICS_ADDR",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "--features otel",
    ] {
        assert!(docs.contains(variable), "{variable} is not documented");
    }
}
