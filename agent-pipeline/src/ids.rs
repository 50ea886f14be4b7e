//! Identifiers that cannot hold invalid values: tasks, stages, steps and attempts.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why a task id, stage, step id or attempt number was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The task id is not a UUID.
    #[error("task id {0:?} is not a UUID")]
    TaskId(String),
    /// The stage name is not one of `design`, `implement`, `test`, `review`.
    #[error("unknown stage {0:?} (expected design, implement, test or review)")]
    UnknownStage(String),
    /// The step id is not of the form `<stage>@v<N>`.
    #[error("malformed step id {0:?} (expected <stage>@v<N>, e.g. design@v1)")]
    MalformedStepId(String),
    /// Attempt numbers start at 1.
    #[error("attempt numbers start at 1")]
    ZeroAttempt,
}

/// The id of one task: a UUID, printed in its lowercase hyphenated form.
///
/// Because it can only hold a UUID, a task id is always safe to use as a directory name.
///
/// ```
/// use agent_pipeline::TaskId;
/// let id: TaskId = "3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10".parse().unwrap();
/// assert_eq!(id.to_string(), "3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10");
/// assert!("../etc".parse::<TaskId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A new random (version 4) task id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for TaskId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl FromStr for TaskId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical 36-character hyphenated form is accepted, so that the id on the
        // wire and the directory name under DATA_DIR are always the same string.
        if s.len() != 36 {
            return Err(IdError::TaskId(s.to_owned()));
        }
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdError::TaskId(s.to_owned()))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// One of the four stages of the pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// The architect designs the change.
    Design,
    /// The implementer writes the code.
    Implement,
    /// The tester writes and runs tests.
    Test,
    /// The reviewer approves or rejects the change.
    Review,
}

impl Stage {
    /// All stages in pipeline order.
    pub const ALL: [Stage; 4] = [Stage::Design, Stage::Implement, Stage::Test, Stage::Review];

    /// The stage's name as used in step ids and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Design => "design",
            Stage::Implement => "implement",
            Stage::Test => "test",
            Stage::Review => "review",
        }
    }

    /// The stage's name for people: `Design`, `Implement`, …
    pub fn title(self) -> &'static str {
        match self {
            Stage::Design => "Design",
            Stage::Implement => "Implement",
            Stage::Test => "Test",
            Stage::Review => "Review",
        }
    }

    /// The stage that follows this one, if any.
    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::Design => Some(Stage::Implement),
            Stage::Implement => Some(Stage::Test),
            Stage::Test => Some(Stage::Review),
            Stage::Review => None,
        }
    }

    /// The stages that run before this one, in order.
    pub fn earlier(self) -> &'static [Stage] {
        &Stage::ALL[..self.index()]
    }

    /// The stage's position in [`Stage::ALL`], from 0.
    pub fn index(self) -> usize {
        match self {
            Stage::Design => 0,
            Stage::Implement => 1,
            Stage::Test => 2,
            Stage::Review => 3,
        }
    }
}

impl FromStr for Stage {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| IdError::UnknownStage(s.to_owned()))
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step of a task: a stage and the version of that stage's contract, printed `design@v1`.
///
/// ```
/// use agent_pipeline::{Stage, StepId};
/// let step: StepId = "implement@v1".parse().unwrap();
/// assert_eq!(step.stage(), Stage::Implement);
/// assert_eq!(step.to_string(), "implement@v1");
/// assert!("deploy@v1".parse::<StepId>().is_err());
/// assert!("design@1".parse::<StepId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId {
    stage: Stage,
    version: NonZeroU32,
}

impl StepId {
    /// The first version of a stage's step, the one the pipeline runs: `design@v1`.
    pub fn v1(stage: Stage) -> Self {
        Self {
            stage,
            version: NonZeroU32::MIN,
        }
    }

    /// The stage this step runs.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The contract version of the step (the `1` of `design@v1`).
    pub fn version(&self) -> u32 {
        self.version.get()
    }

    /// The `v1` step of the next stage, if any.
    pub fn next(&self) -> Option<StepId> {
        self.stage.next().map(StepId::v1)
    }
}

impl FromStr for StepId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || IdError::MalformedStepId(s.to_owned());
        let (stage, version) = s.split_once('@').ok_or_else(malformed)?;
        let stage: Stage = stage.parse()?;
        let digits = version.strip_prefix('v').ok_or_else(malformed)?;
        // Digits only, no sign and no leading zero, so that parsing and printing round-trip.
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(malformed());
        }
        let version: NonZeroU32 = digits.parse().map_err(|_| malformed())?;
        Ok(Self { stage, version })
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@v{}", self.stage, self.version)
    }
}

/// The number of one execution of a step, starting at 1.
///
/// Every execution of a step (a retry or a replay) gets the next number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Attempt(NonZeroU32);

impl Attempt {
    /// The first attempt.
    pub const FIRST: Attempt = Attempt(NonZeroU32::MIN);

    /// Attempt number `n`; zero is rejected.
    pub fn new(n: u32) -> Result<Self, IdError> {
        NonZeroU32::new(n).map(Self).ok_or(IdError::ZeroAttempt)
    }

    /// The attempt number.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The attempt after this one.
    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(TaskId);
string_serde!(Stage);
string_serde!(StepId);

/// The schemas of the ids as they are written on the wire: strings, not their inner types.
macro_rules! string_schema {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

string_schema!(TaskId, "TaskId", {
    "description": "A task id: a UUID in its 36-character hyphenated form.",
    "type": "string",
    "format": "uuid",
    "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
});
string_schema!(Stage, "Stage", {
    "description": "A stage of the pipeline.",
    "type": "string",
    "enum": ["design", "implement", "test", "review"]
});
string_schema!(StepId, "StepId", {
    "description": "A step: `<stage>@v<N>`, e.g. `design@v1`.",
    "type": "string",
    "pattern": "^(design|implement|test|review)@v[1-9][0-9]*$"
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids_round_trip_for_every_stage() {
        for stage in Stage::ALL {
            let text = format!("{stage}@v1");
            let step: StepId = text.parse().expect("valid step id");
            assert_eq!(step.stage(), stage);
            assert_eq!(step.version(), 1);
            assert_eq!(step.to_string(), text);
        }
        assert_eq!("review@v12".parse::<StepId>().map(|s| s.version()), Ok(12));
    }

    #[test]
    fn malformed_step_ids_are_typed_errors() {
        assert_eq!(
            "deploy@v1".parse::<StepId>(),
            Err(IdError::UnknownStage("deploy".into()))
        );
        for bad in [
            "design",
            "design@",
            "design@v",
            "design@1",
            "design@v0",
            "design@v01",
            "design@v-1",
            "design@v1x",
            "design@v1/../x",
            "@v1",
            "",
            "Design@v1",
            "design@v99999999999",
        ] {
            assert!(bad.parse::<StepId>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn task_ids_must_be_canonical_uuids() {
        let id = TaskId::new();
        assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
        for bad in [
            "../../etc/passwd",
            "not-a-uuid",
            "",
            "3f0c8a526a3e4c1e9d1e5b8f2f6f4a10",
            "{3f0c8a52-6a3e-4c1e-9d1e-5b8f2f6f4a10}",
        ] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn stages_know_their_order() {
        assert_eq!(Stage::Design.next(), Some(Stage::Implement));
        assert_eq!(Stage::Review.next(), None);
        assert_eq!(Stage::Test.earlier(), &[Stage::Design, Stage::Implement]);
        assert!(Stage::Design.earlier().is_empty());
    }

    #[test]
    fn ids_serialize_as_strings() {
        let step = StepId::v1(Stage::Review);
        assert_eq!(
            serde_json::to_string(&step).ok().as_deref(),
            Some("\"review@v1\"")
        );
        assert!(serde_json::from_str::<StepId>("\"nope@v1\"").is_err());
        assert!(Attempt::new(0).is_err());
        assert_eq!(Attempt::FIRST.next().get(), 2);
    }
}
