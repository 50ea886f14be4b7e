//! The four default agents: a prompt and an output type each.

use std::sync::Arc;

use super::LlmAgent;
use crate::llm::Llm;
use crate::output::{Design, Implementation, Review, TestPlan};

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
         whole content of every file of the change in files (relative paths; the files you list \
         are the whole change, a file left out is removed), the key lines in code_snippets, and \
         a short description of the change in diff_summary. Tests are written by the tester, not \
         by you. Never put secrets (API keys, tokens, passwords, private keys) in the code; read \
         them from the environment. When the step is redone, the reason says what failed last \
         time (failing tests, review findings, the secret scan): fix exactly that.",
    )
}

/// The Test stage: writes tests and the command that runs them; the pipeline runs them.
pub fn tester(llm: Arc<dyn Llm>) -> LlmAgent<TestPlan> {
    LlmAgent::new(
        llm,
        "You are the tester of a small software team. Write tests for the implementation and the \
         shell command that runs them from the project root. The pipeline writes your test files \
         next to the implementation and runs the command in a sandbox: no network, a read-only \
         system, python3 with its standard library (pytest only if the machine has it), the \
         project directory as the only writable place, and a time limit. Prefer \
         `python3 -m unittest -v` for Python. Test files must not replace implementation files. \
         The pipeline counts passed and failed tests from the run itself (the runner's summary, \
         or the JUnit XML report named in junit_xml), so make the tests check the behaviour the \
         task asks for.",
    )
}

/// The Review stage: approves the change or says what to change.
pub fn reviewer(llm: Arc<dyn Llm>) -> LlmAgent<Review> {
    LlmAgent::new(
        llm,
        "You are the reviewer of a small software team. Review the change against the task and \
         the design. You see the implementation, the diff, and the real results of running the \
         tests in a sandbox (command, exit code, counts and output). Approve only a correct, \
         complete change whose tests ran and passed; put each finding in comments, so that the \
         implementer can act on it.",
    )
}
