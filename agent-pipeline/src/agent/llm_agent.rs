//! An agent that asks an LLM for a typed, validated output.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{Agent, AgentError, AgentInput, AgentOutput, CodeContext};
use crate::ids::Stage;
use crate::llm::{Llm, LlmRequest, Message, Role, Usage};
use crate::output::{Implementation, StageOutput, parse_output, strict_schema};

/// Fields of an earlier artifact that record what happened around the step rather than what
/// it produced: the code its model was shown, and the workspace commits and diff of an
/// implementation (whose files are there whole, and whose diff the reviewer gets in a section
/// of its own). Later prompts leave them out.
const RECORD_ONLY_FIELDS: &[&str] = &[
    CodeContext::RETRIEVED,
    CodeContext::RETRIEVED_FROM,
    Implementation::WORKSPACE_FIELD,
];

/// An agent that asks an LLM for a `T`, with instructions as its system prompt.
///
/// Every answer is parsed and validated as a `T`; an invalid answer is sent back to the model
/// with what is wrong, up to [`LlmAgent::with_repairs`] times, before the step fails.
pub struct LlmAgent<T> {
    instructions: String,
    llm: Arc<dyn Llm>,
    repairs: u32,
    output: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for LlmAgent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmAgent")
            .field("output", &std::any::type_name::<T>())
            .field("llm", &self.llm)
            .field("repairs", &self.repairs)
            .finish()
    }
}

impl<T: StageOutput> LlmAgent<T> {
    /// An agent with these instructions over `llm`, allowing two repairs.
    pub fn new(llm: Arc<dyn Llm>, instructions: impl Into<String>) -> Self {
        Self {
            instructions: instructions.into(),
            llm,
            repairs: 2,
            output: PhantomData,
        }
    }

    /// How many times an invalid answer is sent back for repair.
    pub fn with_repairs(mut self, repairs: u32) -> Self {
        self.repairs = repairs;
        self
    }

    /// The system prompt.
    pub fn instructions(&self) -> &str {
        &self.instructions
    }

    /// The first user message: the task, the earlier stages' outputs and the step to do.
    pub fn context(&self, input: &AgentInput) -> String {
        let mut text = format!("## Task\n{}\n", input.prompt.trim());
        if !input.prior.is_empty() {
            text.push_str("\n## Earlier stages\n");
            for prior in &input.prior {
                let mut output = prior.output.clone();
                for field in RECORD_ONLY_FIELDS {
                    output.remove(*field);
                }
                let json = serde_json::to_string_pretty(&Value::Object(output)).unwrap_or_default();
                text.push_str(&format!("### {}\n```json\n{json}\n```\n", prior.step));
            }
        }
        text.push_str(&format!(
            "\n## Your step\n{} (attempt {}). Answer with one JSON object that follows the schema `{}`.\n",
            input.step,
            input.attempt,
            T::SCHEMA_NAME
        ));
        if let Some(code) = &input.code {
            text.push_str(&format!(
                "\n## The repository's code that matters to the task (retrieved)\n{}\n",
                code.text.trim_end()
            ));
        }
        if let Some(diff) = &input.diff {
            text.push_str(&format!(
                "\n## The change (git diff)\n```diff\n{diff}\n```\n"
            ));
        }
        if let Some(reason) = &input.reason {
            text.push_str(&format!("\nThis step is being redone. Reason: {reason}\n"));
        }
        text
    }
}

#[async_trait]
impl<T: StageOutput> Agent for LlmAgent<T> {
    fn stage(&self) -> Stage {
        T::STAGE
    }

    async fn run(&self, input: &AgentInput) -> Result<AgentOutput, AgentError> {
        let mut request = LlmRequest {
            messages: vec![
                Message::new(Role::System, self.instructions.clone()),
                Message::new(Role::User, self.context(input)),
            ],
            schema_name: T::SCHEMA_NAME.to_owned(),
            schema: strict_schema::<T>(),
            model: None,
        };
        let mut usage = Usage::default();
        let mut calls = 0;
        loop {
            calls += 1;
            let answer = self.llm.complete(&request).await?;
            usage += answer.usage;
            let problem = match parse_output::<T>(&answer.content) {
                Ok(output) => {
                    let Value::Object(output) = serde_json::to_value(&output).unwrap_or_default()
                    else {
                        return Err(AgentError::InvalidOutput {
                            schema: T::SCHEMA_NAME,
                            calls,
                            problem: "the output is not a JSON object".into(),
                        });
                    };
                    return Ok(AgentOutput {
                        output,
                        model: answer.model,
                        usage,
                    });
                }
                Err(problem) => problem,
            };
            tracing::warn!(task_id = %input.task_id, step = %input.step, calls, %problem, "invalid answer from the model");
            if calls > self.repairs {
                return Err(AgentError::InvalidOutput {
                    schema: T::SCHEMA_NAME,
                    calls,
                    problem,
                });
            }
            request
                .messages
                .push(Message::new(Role::Assistant, answer.content));
            request.messages.push(Message::new(
                Role::User,
                format!(
                    "Your answer was rejected: {problem}. Answer again with one JSON object that \
                     follows the schema exactly."
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Attempt, StepId, TaskId};
    use crate::llm::{LlmError, LlmResponse};
    use crate::output::Design;
    use std::sync::Mutex;

    /// Answers with the scripted texts in turn and records every request.
    #[derive(Debug, Default)]
    struct Scripted {
        answers: Mutex<Vec<String>>,
        seen: Mutex<Vec<LlmRequest>>,
    }

    #[async_trait]
    impl Llm for Scripted {
        fn model(&self) -> &str {
            "scripted"
        }

        async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
            self.seen
                .lock()
                .map_err(|_| LlmError::Transport("poisoned".into()))?
                .push(request.clone());
            let mut answers = self
                .answers
                .lock()
                .map_err(|_| LlmError::Transport("poisoned".into()))?;
            let content = if answers.is_empty() {
                String::new()
            } else {
                answers.remove(0)
            };
            Ok(LlmResponse {
                content,
                model: "scripted".into(),
                usage: Usage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    total_tokens: 15,
                },
            })
        }
    }

    fn input() -> AgentInput {
        AgentInput {
            task_id: TaskId::new(),
            step: StepId::v1(Stage::Design),
            attempt: Attempt::FIRST,
            prompt: "Write hello.py".into(),
            prior: Vec::new(),
            reason: None,
            diff: None,
            code: None,
        }
    }

    #[tokio::test]
    async fn an_invalid_answer_is_sent_back_with_the_problem() {
        let llm = Arc::new(Scripted {
            answers: Mutex::new(vec![
                "not json".into(),
                r#"{"design_summary":"Print a greeting","files_touched":["hello.py"]}"#.into(),
            ]),
            ..Default::default()
        });
        let agent = LlmAgent::<Design>::new(llm.clone(), "You design.");
        let output = agent.run(&input()).await;
        let output = output.unwrap_or_else(|e| panic!("repair should succeed: {e}"));
        assert_eq!(
            output.output["files_touched"],
            serde_json::json!(["hello.py"])
        );
        assert_eq!(output.usage.total_tokens, 30, "usage of both calls");
        let seen = llm.seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen.len(), 2);
        let feedback = &seen[1].messages[3].content;
        assert!(
            feedback.contains("rejected") && feedback.contains("not valid"),
            "{feedback}"
        );
        assert_eq!(seen[1].messages[2].content, "not json");
    }

    #[tokio::test]
    async fn earlier_artifacts_are_shown_without_what_only_records_the_step() {
        let llm = Arc::new(Scripted {
            answers: Mutex::new(vec![
                r#"{"design_summary":"Print a greeting","files_touched":["hello.py"]}"#.into(),
            ]),
            ..Default::default()
        });
        let mut input = input();
        let recorded = serde_json::json!({
            "diff_summary": "prints hello",
            "files": [{"path": "hello.py", "content": "print('hello')\n"}],
            "workspace": {"commit": "c0ffee", "diff": "diff --git a/hello.py b/hello.py"},
            "retrieved": [{"path": "shop/cart.py", "start_line": 1, "end_line": 3, "score": 1.0}],
            "retrieved_from": "c0ffee",
        });
        input.prior = vec![super::super::PriorArtifact {
            step: StepId::v1(Stage::Implement),
            output: recorded.as_object().cloned().unwrap_or_default(),
        }];
        let agent = LlmAgent::<Design>::new(llm.clone(), "You design.");
        agent
            .run(&input)
            .await
            .unwrap_or_else(|e| panic!("the step runs: {e}"));
        let seen = llm.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let prompt = &seen[0].messages[1].content;
        assert!(
            prompt.contains("prints hello") && prompt.contains("print('hello')"),
            "{prompt}"
        );
        for left_out in [
            "\"workspace\"",
            "diff --git",
            "\"retrieved\"",
            "retrieved_from",
            "c0ffee",
        ] {
            assert!(!prompt.contains(left_out), "{left_out} in {prompt}");
        }
    }

    #[tokio::test]
    async fn the_step_fails_when_repairs_run_out() {
        let llm = Arc::new(Scripted {
            answers: Mutex::new(vec![r#"{"design_summary":""}"#.into(); 5]),
            ..Default::default()
        });
        let agent = LlmAgent::<Design>::new(llm.clone(), "You design.").with_repairs(1);
        let error = agent.run(&input()).await.err();
        assert!(
            matches!(error, Some(AgentError::InvalidOutput { calls: 2, .. })),
            "{error:?}"
        );
        assert!(error.is_some_and(|e| e.is_retryable()));
    }
}
