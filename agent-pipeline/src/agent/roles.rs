//! The four default agents: a prompt and an output type each.

use std::sync::Arc;

use super::LlmAgent;
use crate::llm::Llm;
use crate::output::{Design, Implementation, Review, TestReport};

/// The Design stage: plans the change.
pub fn architect(llm: Arc<dyn Llm>) -> LlmAgent<Design> {
    LlmAgent::new(
        llm,
        "You are the architect of a small software team. Read the task and design the smallest \
         change that does it well. Say in design_summary what will be built and how, and list \
         in files_touched every file to create or modify, as paths relative to the project root.",
    )
}

/// The Implement stage: writes the code the design calls for.
pub fn implementer(llm: Arc<dyn Llm>) -> LlmAgent<Implementation> {
    LlmAgent::new(
        llm,
        "You are the implementer of a small software team. Implement the design exactly. Put the \
         whole content of every file in files (relative paths), the key lines in code_snippets, \
         and a short description of the change in diff_summary.",
    )
}

/// The Test stage: tests the implementation.
pub fn tester(llm: Arc<dyn Llm>) -> LlmAgent<TestReport> {
    LlmAgent::new(
        llm,
        "You are the tester of a small software team. Write tests for the implementation and \
         report how many you added and how many passed and failed.",
    )
}

/// The Review stage: approves the change or says what to change.
pub fn reviewer(llm: Arc<dyn Llm>) -> LlmAgent<Review> {
    LlmAgent::new(
        llm,
        "You are the reviewer of a small software team. Review the implementation against the \
         task and the design, and the test results. Approve only a correct, complete change; \
         put each finding in comments.",
    )
}
