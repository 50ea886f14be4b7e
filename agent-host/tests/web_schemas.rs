//! `GET /api/schemas` and `GET /api/schemas/{name}` over HTTP, on a real `agent-host web`
//! with `WEB_TOKEN` set: the index, one schema with its version as the ETag, 304 for a
//! schema the client has, 404 with the known names for an unknown one, 401 without the token.

mod common;

use common::http::{request, request_with};
use common::{Host, Sandbox};

const TOKEN: &str = "schemas-t0ken";

#[test]
fn the_api_serves_the_registry_with_versions_as_etags() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["web", "--listen", "127.0.0.1:0"]);
    command
        .env("WEB_TOKEN", TOKEN)
        .env("TASK_TOPIC", "team_tasks");
    let host = Host::start(command);
    let base = host.url.as_str();

    let refused = request(base, "GET", "/api/schemas", None, None);
    assert_eq!(refused.status, 401, "{}", refused.body);
    let refused = request(base, "GET", "/api/schemas/new_task", None, None);
    assert_eq!(refused.status, 401, "{}", refused.body);

    let index = request(base, "GET", "/api/schemas", Some(TOKEN), None);
    assert_eq!(index.status, 200, "{}", index.body);
    let index = index.json();
    let schemas = index["schemas"].as_array().cloned().unwrap_or_default();
    assert_eq!(schemas.len(), 13, "{index}");
    let new_task = schemas
        .iter()
        .find(|s| s["name"] == "new_task")
        .unwrap_or_else(|| panic!("no new_task:\n{index}"));
    assert_eq!(new_task["topic"], "team_tasks", "the configured topic");
    assert_eq!(new_task["url"], "/api/schemas/new_task");
    let version = new_task["version"].as_str().unwrap_or_default().to_owned();
    assert_eq!(version.len(), 12, "{new_task}");
    let review = schemas.iter().find(|s| s["name"] == "review");
    assert_eq!(review.map(|r| r["topic"].clone()), Some("artifact".into()));

    // Each URL of the index serves the schema itself, tagged with its version.
    for summary in &schemas {
        let url = summary["url"].as_str().unwrap_or_default();
        let answer = request(base, "GET", url, Some(TOKEN), None);
        assert_eq!(answer.status, 200, "{url}: {}", answer.body);
        assert!(
            answer
                .headers
                .contains("content-type: application/schema+json"),
            "{url}: {}",
            answer.headers
        );
        let etag = format!("etag: \"{}\"", summary["version"].as_str().unwrap_or("?"));
        assert!(answer.headers.contains(&etag), "{url}: {}", answer.headers);
        let schema = answer.json();
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{url}"
        );
        assert!(schema["title"].is_string(), "{url}: {schema}");
    }
    let schema = request(base, "GET", "/api/schemas/new_task", Some(TOKEN), None).json();
    assert_eq!(schema["required"], serde_json::json!(["task_id", "prompt"]));

    // A client that has this version is told so; one with an older version gets the schema.
    let current = format!("\"{version}\"");
    let same = request_with(
        base,
        "GET",
        "/api/schemas/new_task",
        Some(TOKEN),
        None,
        &[("If-None-Match", &current)],
    );
    assert_eq!(same.status, 304, "{}", same.headers);
    assert!(same.body.is_empty(), "{}", same.body);
    let older = request_with(
        base,
        "GET",
        "/api/schemas/new_task",
        Some(TOKEN),
        None,
        &[("If-None-Match", "\"000000000000\"")],
    );
    assert_eq!(older.status, 200, "{}", older.headers);

    let unknown = request(base, "GET", "/api/schemas/new_tasks", Some(TOKEN), None);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(
        unknown.headers.contains("content-type: application/json"),
        "{}",
        unknown.headers
    );
    let error = unknown.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("unknown schema \"new_tasks\"") && error.contains("step_result"),
        "{error}"
    );
}
