//! The schema registry: the JSON Schema of every message on the topics and of every stage
//! output, each with a stable name and a version, so that other programs can validate what
//! they consume (`docs/schemas.md`).
//!
//! The schemas are generated from the Rust types with schemars (draft 2020-12, describing
//! what the pipeline accepts on input: fields with a default are optional), so they cannot
//! say something the types do not. The version of each is a hash of its content
//! ([`version_of`]): it changes exactly when the schema does.

mod version;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde_json::Value;

use crate::bus::Topics;
use crate::output::{Design, Implementation, Review, TestPlan, TestReport};
use crate::wire::{
    CiWatch, DeadLetter, NewTask, ReplayStep, ReportEvent, StepRequest, StepResult, TaskControl,
};

pub use version::version_of;

/// The `topic` of the stage outputs stored as artifacts.
pub const ARTIFACT: &str = "artifact";

/// The `topic` of a model's answer that the pipeline turns into another artifact.
pub const MODEL_OUTPUT: &str = "model_output";

/// One registered schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchemaEntry {
    /// The stable name: `step_result`, `design`, …
    pub name: &'static str,
    /// The topic the message travels on (as configured), [`ARTIFACT`] for a stage output
    /// stored under `DATA_DIR`, or [`MODEL_OUTPUT`] for a model's answer that is not stored
    /// as it is.
    pub topic: String,
    /// Where the artifact is stored under `DATA_DIR`, for artifacts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<&'static str>,
    /// The version: [`version_of`] the schema.
    pub version: String,
    /// The JSON Schema (draft 2020-12).
    pub schema: Value,
}

/// A name the registry does not know, with the names it does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown schema {name:?} (known: {})", known.join(", "))]
pub struct UnknownSchema {
    /// The name asked for.
    pub name: String,
    /// Every registered name.
    pub known: Vec<&'static str>,
}

/// Where the values of one schema travel.
#[derive(Debug, Clone, Copy)]
enum Carrier {
    /// A topic of [`Topics`], by its field.
    Topic(fn(&Topics) -> &str),
    /// An artifact file under `DATA_DIR`.
    Artifact(&'static str),
    /// A model's answer, turned into another artifact.
    ModelOutput,
}

/// One line of the registry.
#[derive(Debug, Clone, Copy)]
struct Definition {
    name: &'static str,
    carrier: Carrier,
    schema: fn() -> Value,
}

const fn define<T: JsonSchema>(name: &'static str, carrier: Carrier) -> Definition {
    Definition {
        name,
        carrier,
        schema: schema_of::<T>,
    }
}

/// Every registered schema, messages first, in the order of the pipeline.
const DEFINITIONS: [Definition; 13] = [
    define::<NewTask>("new_task", Carrier::Topic(|t| &t.tasks)),
    define::<ReplayStep>("replay_step", Carrier::Topic(|t| &t.tasks)),
    define::<TaskControl>("task_control", Carrier::Topic(|t| &t.tasks)),
    define::<StepRequest>("step_request", Carrier::Topic(|t| &t.step_requests)),
    define::<StepResult>("step_result", Carrier::Topic(|t| &t.step_results)),
    define::<ReportEvent>("report_event", Carrier::Topic(|t| &t.reports)),
    define::<CiWatch>("ci_watch", Carrier::Topic(|t| &t.ci_watch)),
    define::<DeadLetter>("dead_letter", Carrier::Topic(|t| &t.dlq)),
    define::<Design>("design", Carrier::Artifact("<task_id>/design@v<N>.json")),
    define::<Implementation>(
        "implementation",
        Carrier::Artifact("<task_id>/implement@v<N>.json"),
    ),
    define::<TestPlan>("test_plan", Carrier::ModelOutput),
    define::<TestReport>("test_report", Carrier::Artifact("<task_id>/test@v<N>.json")),
    define::<Review>("review", Carrier::Artifact("<task_id>/review@v<N>.json")),
];

/// The JSON Schema of `T` as the registry publishes it: draft 2020-12, one root schema with
/// its definitions under `$defs`.
fn schema_of<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

impl Definition {
    fn entry(&self, topics: &Topics) -> SchemaEntry {
        let (topic, file) = match self.carrier {
            Carrier::Topic(topic) => (topic(topics).to_owned(), None),
            Carrier::Artifact(file) => (ARTIFACT.to_owned(), Some(file)),
            Carrier::ModelOutput => (MODEL_OUTPUT.to_owned(), None),
        };
        let schema = (self.schema)();
        SchemaEntry {
            name: self.name,
            topic,
            file,
            version: version_of(&schema),
            schema,
        }
    }
}

/// The name of every registered schema, in the registry's order.
pub fn names() -> Vec<&'static str> {
    DEFINITIONS.iter().map(|d| d.name).collect()
}

/// Every registered schema, with the topic names of `topics`.
///
/// ```
/// use agent_pipeline::bus::Topics;
/// use agent_pipeline::schemas;
/// let registry = schemas::registry(&Topics::default());
/// let result = registry.iter().find(|e| e.name == "step_result").expect("registered");
/// assert_eq!(result.topic, "step_results");
/// assert_eq!(result.version, schemas::version_of(&result.schema));
/// assert!(registry.iter().any(|e| e.name == "design" && e.topic == schemas::ARTIFACT));
/// ```
pub fn registry(topics: &Topics) -> Vec<SchemaEntry> {
    DEFINITIONS.iter().map(|d| d.entry(topics)).collect()
}

/// The schema named `name`, with the topic names of `topics`.
///
/// ```
/// use agent_pipeline::bus::Topics;
/// use agent_pipeline::schemas;
/// let new_task = schemas::find(&Topics::default(), "new_task")?;
/// assert_eq!(new_task.topic, "agent_tasks");
/// assert_eq!(new_task.schema["properties"]["prompt"]["type"], "string");
/// let unknown = schemas::find(&Topics::default(), "nope").unwrap_err();
/// assert!(unknown.to_string().contains("new_task, replay_step"));
/// # Ok::<(), schemas::UnknownSchema>(())
/// ```
pub fn find(topics: &Topics, name: &str) -> Result<SchemaEntry, UnknownSchema> {
    DEFINITIONS
        .iter()
        .find(|d| d.name == name)
        .map(|d| d.entry(topics))
        .ok_or_else(|| UnknownSchema {
            name: name.to_owned(),
            known: names(),
        })
}
