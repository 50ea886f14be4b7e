#![doc = include_str!("../README.md")]

pub mod agent;
pub mod budget;
pub mod bus;
#[cfg(feature = "test-util")]
pub mod conformance;
mod error;
pub mod execution;
pub mod gates;
#[cfg(any(feature = "openai", feature = "github"))]
mod http;
mod ids;
pub mod llm;
pub mod machine;
#[cfg(feature = "memory")]
pub mod memory;
pub mod metrics;
pub mod output;
mod pipeline;
pub mod publish;
pub mod retention;
pub mod schemas;
mod service;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod wire;

pub use error::{Error, Result, error_chain};
pub use ids::{Attempt, IdError, Stage, StepId, TaskId};
pub use pipeline::{Pipeline, PipelineBuilder, Redriven, ReportWatch, RunningPipeline};
pub use service::Service;
