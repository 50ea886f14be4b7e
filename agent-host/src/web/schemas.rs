//! `GET /api/schemas` and `GET /api/schemas/{name}`: the schema registry
//! ([`agent_pipeline::schemas`]) over HTTP, for programs that validate what they consume.

use agent_pipeline::schemas;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{WebError, WebState};

/// The media type of a schema (RFC draft-bhutton-json-schema: `application/schema+json`).
const SCHEMA_JSON: &str = "application/schema+json";

/// One line of `GET /api/schemas`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SchemaSummary {
    /// The stable name, e.g. `step_result`.
    pub name: String,
    /// The topic the message travels on, `artifact` or `model_output`.
    pub topic: String,
    /// Where the artifact is stored under `DATA_DIR`, for artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The version: the first 12 hexadecimal digits of the SHA-256 of the schema.
    pub version: String,
    /// Where the schema itself is served.
    pub url: String,
}

/// The answer to `GET /api/schemas`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SchemaIndex {
    /// Every registered schema, messages first.
    pub schemas: Vec<SchemaSummary>,
}

/// `GET /api/schemas`: name, topic, version and URL of every schema.
pub(crate) async fn index(State(state): State<WebState>) -> Json<SchemaIndex> {
    let schemas = schemas::registry(state.pipeline().topics())
        .into_iter()
        .map(|entry| SchemaSummary {
            url: format!("/api/schemas/{}", entry.name),
            name: entry.name.to_owned(),
            topic: entry.topic,
            file: entry.file.map(str::to_owned),
            version: entry.version,
        })
        .collect();
    Json(SchemaIndex { schemas })
}

/// `GET /api/schemas/{name}`: the JSON Schema alone, as `application/schema+json`, with the
/// version as its `ETag`; 304 when `If-None-Match` names that version, 404 for an unknown
/// name (the error lists the known ones).
pub(crate) async fn schema(
    State(state): State<WebState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = schemas::find(state.pipeline().topics(), &name)
        .map_err(|unknown| WebError::NotFound(unknown.to_string()))?;
    let etag = format!("\"{}\"", entry.version);
    let etag_header = HeaderValue::from_str(&etag)
        .map_err(|e| WebError::Internal(format!("invalid ETag {etag}: {e}")))?;
    if matches_etag(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response());
    }
    let body = serde_json::to_string_pretty(&entry.schema)
        .map_err(|e| WebError::Internal(format!("cannot write the schema: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(SCHEMA_JSON)),
            (header::ETAG, etag_header),
        ],
        body,
    )
        .into_response())
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}
