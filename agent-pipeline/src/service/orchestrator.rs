//! The orchestrator: persists results, moves tasks along, retries and dead-letters, checks the
//! gates at the end of each round and publishes the change that passes them.

use std::collections::VecDeque;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::Instrument;

use super::publishing::{Publication, publish, round_artifacts};
use super::stage_effects::reviewed_commit;
use super::{Deps, Handler};
use crate::Result;
use crate::bus::Delivery;
use crate::gates::{GateInput, GateVerdict};
use crate::ids::{Stage, TaskId};
use crate::llm::Spend;
use crate::machine::{Command, Context, LastAttempts, on_gates, on_step_result, random_jitter};
use crate::metrics::AppliedResult;
use crate::store::{Artifact, AttemptRecord, OutboxMessage, TaskStatus};
use crate::wire::{StepOutcome, StepResult, decode, encode};

#[derive(Debug, Clone)]
pub(crate) struct Orchestrator {
    pub(crate) deps: Deps,
}

#[async_trait]
impl Handler for Orchestrator {
    async fn handle(&self, delivery: &Delivery) -> Result<()> {
        let deps = &self.deps;
        let result: StepResult = match decode(&delivery.payload) {
            Ok(result) => result,
            Err(malformed) => return deps.dead_letter(delivery, &malformed.reason).await,
        };
        // A known task has attempts; only without any is the task itself looked up.
        let attempts = deps.state.attempts(result.task_id).await?;
        if attempts.is_empty() && deps.state.task(result.task_id).await?.is_none() {
            return deps
                .dead_letter(
                    delivery,
                    &format!("result for unknown task {}", result.task_id),
                )
                .await;
        }
        // A result already recorded is a redelivery: it must not create a second attempt.
        let recorded = attempts
            .iter()
            .find(|a| a.step_id() == result.step_id && a.attempt() == result.attempt);
        if recorded.is_some_and(|a| a.status.is_finished()) {
            // The handler that recorded it may have died before sending what it led to: the
            // kept messages go out again (a reader skips those it has, by their bytes).
            let pending = deps
                .state
                .outbox(result.task_id, result.step_id, result.attempt)
                .await?;
            if pending.is_empty() {
                tracing::debug!(task_id = %result.task_id, step = %result.step_id, attempt = %result.attempt, "duplicate result ignored");
                crate::metrics::duplicate_result();
            } else {
                tracing::info!(task_id = %result.task_id, step = %result.step_id, attempt = %result.attempt, messages = pending.len(), "sending again what this result led to");
                self.send_outbox(pending).await?;
            }
            return Ok(());
        }
        if let StepOutcome::Succeeded { output, .. } = &result.outcome
            && !output.is_object()
        {
            return deps
                .dead_letter(delivery, "a step output must be a JSON object")
                .await;
        }
        let span = tracing::info_span!("apply", task_id = %result.task_id, step = %result.step_id, attempt = %result.attempt);
        let before = attempts_before(&result, attempts);
        self.apply(&result, &before).instrument(span).await
    }
}

/// `message` as it goes out on `topic`, keyed by its task.
fn outgoing<T: serde::Serialize>(topic: &str, task_id: TaskId, message: &T) -> OutboxMessage {
    OutboxMessage {
        topic: topic.to_owned(),
        key: task_id.to_string(),
        payload: encode(message),
    }
}

/// The task's attempts as they were before `result` was first handled. A handler that died
/// between its effects and its state change (a killed orchestrator) leaves the attempts it
/// requested behind, still unfinished and requested after the result's own attempt; leaving
/// them out makes the redelivered result request the same attempt numbers again, which the
/// state store already holds (so no attempt is created twice) and which go out again (in
/// case the first publication never did). One task's steps run one at a time, so nothing
/// else requests a run of its steps meanwhile; replays are kept.
fn attempts_before(result: &StepResult, attempts: Vec<AttemptRecord>) -> Vec<AttemptRecord> {
    let Some(own) = attempts
        .iter()
        .find(|a| a.step_id() == result.step_id && a.attempt() == result.attempt)
        .map(|a| a.request.requested_at)
    else {
        return attempts;
    };
    attempts
        .into_iter()
        .filter(|a| {
            let caused_by_result = !a.status.is_finished()
                && a.mode() == crate::wire::StepMode::Run
                && a.request.requested_at > own;
            !caused_by_result
        })
        .collect()
}

impl Orchestrator {
    /// Performs what the result leads to. Artifacts, requests and dead letters first, then
    /// the state change, then the reports and the ci_watch message. A crash before the state
    /// change redelivers the result, which redoes the idempotent effects (publishing moves
    /// the branch to the same commit again); reports come last so that whoever reacts to one
    /// (a waiting CLI, the UI) finds the state store already up to date.
    ///
    /// `attempts` are the task's attempts as recorded before this result.
    async fn apply(&self, result: &StepResult, attempts: &[AttemptRecord]) -> Result<()> {
        let deps = &self.deps;
        let now = Utc::now();
        let task_dir = deps.artifacts.task_location(result.task_id);
        let context = Context {
            task_dir: &task_dir,
            results_topic: &deps.topics.step_results,
            now,
            jitter: random_jitter(),
            last_attempts: LastAttempts::of(
                attempts
                    .iter()
                    .map(|record| (record.step_id(), record.attempt())),
            ),
            spent: Spend::of(
                attempts
                    .iter()
                    .flat_map(|record| &record.calls)
                    .chain(&result.calls),
            ),
        };
        let transition = on_step_result(&deps.policy, result, context);
        let mut task_status = transition.task_status;
        let mut queue = VecDeque::from(transition.commands);
        let mut reports = Vec::new();
        let mut ci_watch = None;
        // The round's artifacts, read once for the gates and the publication that follows.
        let mut round = Vec::new();
        let mut applied = AppliedResult::default();
        while let Some(command) = queue.pop_front() {
            match command {
                Command::SaveArtifact => self.save_artifact(result, now).await?,
                Command::RequestStep(request) => {
                    applied.requested(&request);
                    // Already reserved when this result was handled before (see
                    // `attempts_before`): the request goes out again, under the same number.
                    if !deps.state.reserve_attempt(&request).await? {
                        tracing::info!(task_id = %request.task_id, step = %request.step_id, attempt = %request.attempt, "attempt already requested by an earlier handling of this result; sending it again");
                    }
                    deps.publish(&deps.topics.step_requests, request.task_id, &request)
                        .await?;
                }
                Command::Report(event) => reports.push(event),
                Command::DeadLetter(letter) => {
                    deps.publish(&deps.topics.dlq, result.task_id, &letter)
                        .await?;
                    applied.dead_lettered();
                }
                Command::EvaluateGates => {
                    round = round_artifacts(deps, result.task_id).await?;
                    let verdicts = if deps.execution.execute_code {
                        self.check_gates(result, &round).await?
                    } else {
                        Vec::new()
                    };
                    let next = on_gates(deps.execution.gate_rounds, result, &verdicts, context);
                    task_status = next.task_status;
                    for command in next.commands.into_iter().rev() {
                        queue.push_front(command);
                    }
                }
                Command::PublishChange if self.cancelled(result.task_id).await? => {
                    tracing::info!(task_id = %result.task_id, "the task was cancelled: nothing is published");
                    task_status = None;
                    queue.clear();
                    reports.clear();
                }
                Command::PublishChange if !deps.execution.execute_code => {
                    tracing::debug!(task_id = %result.task_id, "code execution is off: nothing to publish");
                }
                Command::PublishChange => {
                    let step = Some(result.step_id);
                    match publish(deps, result.task_id, step, &round, context).await? {
                        Publication::Published { pr, watch } => {
                            reports.push(*pr);
                            ci_watch = Some(watch);
                        }
                        Publication::Failed(failed) => {
                            task_status = failed.task_status;
                            queue = VecDeque::from(failed.commands);
                        }
                    }
                }
            }
        }
        // The reports and the CI watch are kept with the state change and sent after it: a
        // crash in between sends them on the result's redelivery.
        let mut outbox: Vec<OutboxMessage> = reports
            .iter()
            .map(|event| outgoing(&deps.topics.reports, event.task_id, event))
            .collect();
        if let Some(watch) = ci_watch {
            outbox.push(outgoing(&deps.topics.ci_watch, watch.task_id, &watch));
        }
        let recorded = deps
            .state
            .finish_attempt_with_outbox(result, task_status, now, &outbox)
            .await?;
        applied.record(result, task_status, &deps.topics.step_results);
        if recorded {
            crate::metrics::step_spent(result.step_id.stage(), &result.calls);
            if let Some(status) = task_status.filter(|status| status.is_final()) {
                let reason = reports.iter().find_map(|event| event.reason.as_deref());
                crate::metrics::task_cost(status, &context.spent, reason);
            }
            self.send_outbox(outbox).await?;
        }
        Ok(())
    }

    /// Whether the task was cancelled (so that nothing of it is published any more).
    async fn cancelled(&self, task_id: TaskId) -> Result<bool> {
        let task = self.deps.state.task(task_id).await?;
        Ok(task.is_some_and(|task| task.status == TaskStatus::Cancelled))
    }

    /// Sends the messages kept with a result.
    async fn send_outbox(&self, messages: Vec<OutboxMessage>) -> Result<()> {
        for message in messages {
            self.deps
                .bus
                .publish(&message.topic, &message.key, message.payload)
                .await?;
        }
        Ok(())
    }

    async fn save_artifact(&self, result: &StepResult, now: DateTime<Utc>) -> Result<()> {
        let StepOutcome::Succeeded {
            output: Value::Object(output),
            model,
            usage,
        } = &result.outcome
        else {
            return Ok(());
        };
        let replay = result.mode == crate::wire::StepMode::Replay;
        let artifact = Artifact {
            output: output.clone(),
            task_id: result.task_id,
            step: result.step_id,
            attempt: result.attempt,
            model: model.clone(),
            usage: *usage,
            cost_usd: Spend::of(&result.calls).cost_usd,
            llm_calls: result.calls.clone(),
            created_at: now,
            duration_ms: result.duration_ms,
            replay_reason: result.reason.clone().filter(|_| replay),
            round: result.round,
            feedback: result.reason.clone().filter(|_| !replay),
            variant: result.variant.clone(),
        };
        let path = self.deps.artifacts.write_artifact(&artifact).await?;
        tracing::info!(task_id = %result.task_id, step = %result.step_id, attempt = %result.attempt, %path, "artifact stored");
        Ok(())
    }

    /// Checks every gate on the reviewed commit and records the verdicts as
    /// `gates.round<N>.json`.
    async fn check_gates(
        &self,
        review: &StepResult,
        artifacts: &[Artifact],
    ) -> Result<Vec<GateVerdict>> {
        let deps = &self.deps;
        let commit = artifacts
            .iter()
            .find(|a| a.step.stage() == Stage::Review)
            .and_then(reviewed_commit);
        let verdicts = match commit {
            None => vec![GateVerdict::fail(
                "workspace",
                "the review names no tested workspace commit: the tests did not run",
            )],
            Some(commit) => match deps.workspace(review.task_id).await {
                Err(error) => vec![GateVerdict::fail("workspace", error.to_string())],
                Ok(workspace) => match workspace.files_at(&commit).await {
                    Err(error) => vec![GateVerdict::fail("workspace", error.to_string())],
                    Ok(files) => {
                        let input = GateInput {
                            task_id: review.task_id,
                            round: review.round,
                            workspace: &workspace,
                            commit: &commit,
                            files: &files,
                            artifacts,
                            sandbox: deps.execution.sandbox.as_ref(),
                        };
                        let mut verdicts = Vec::new();
                        for gate in &deps.execution.gates {
                            verdicts.push(gate.check(&input).await);
                        }
                        verdicts
                    }
                },
            },
        };
        let record = serde_json::json!({
            "round": review.round,
            "passed": verdicts.iter().all(|v| v.passed),
            "verdicts": verdicts,
            "checked_at": Utc::now(),
        });
        deps.artifacts
            .write_record(
                review.task_id,
                &format!("gates.round{}.json", review.round),
                &record,
            )
            .await?;
        tracing::info!(task_id = %review.task_id, round = review.round, passed = verdicts.iter().all(|v| v.passed), "gates checked");
        Ok(verdicts)
    }
}
