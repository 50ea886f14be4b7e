//! Replays as variants: the replay form of a step (another model or provider, an edited
//! prompt or upstream output, the later stages run again), reading it into a
//! [`ReplayStep`], and how a replayed attempt's variant is shown.

use agent_pipeline::wire::{ReplayStep, Variant};
use agent_pipeline::{Stage, StepId, TaskId};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::layout;
use crate::web::{WebError, WebState, actions, text};

/// The replay form of a step.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReplayForm {
    /// The step to run again, e.g. `implement@v1`.
    #[serde(default)]
    step: String,
    /// Why, recorded in the new attempt.
    #[serde(default)]
    reason: Option<String>,
    /// Another model than the configured one (blank: the configured one).
    #[serde(default)]
    model: Option<String>,
    /// Another provider (blank: the default LLM).
    #[serde(default)]
    provider: Option<String>,
    /// An edited task prompt for this attempt (blank: the task's own).
    #[serde(default)]
    prompt: Option<String>,
    /// The upstream step whose output `input_json` replaces (blank: none).
    #[serde(default)]
    input_step: Option<String>,
    /// The edited output of `input_step`, a JSON object.
    #[serde(default)]
    input_json: Option<String>,
    /// Present (`1`) when the later stages should run again from the new attempt.
    #[serde(default)]
    continue_downstream: Option<String>,
    /// The token of the page the form came from (missing reads as empty, and is refused).
    #[serde(default)]
    pub(super) csrf: String,
}

/// Text that says something, trimmed; blank reads as not given.
fn given(text: Option<&str>) -> Option<&str> {
    text.map(str::trim).filter(|t| !t.is_empty())
}

impl ReplayForm {
    /// The replay command the form asks for; a half-given or malformed edited output is a
    /// 400 that says what to fix.
    pub(super) fn command(self, task_id: TaskId) -> Result<ReplayStep, WebError> {
        let step = actions::parse_step(&self.step)?;
        let mut command = ReplayStep::new(task_id, step, self.reason);
        command.model = self.model;
        command.provider = self.provider;
        command.prompt = self.prompt;
        command.continue_downstream = given(self.continue_downstream.as_deref())
            .is_some_and(|value| value != "0" && value != "false");
        match (
            given(self.input_step.as_deref()),
            given(self.input_json.as_deref()),
        ) {
            (None, None) => {}
            (Some(input), None) => {
                return Err(WebError::BadRequest(format!(
                    "no edited output was given for {input}: paste its output as a JSON object, \
                     or choose no upstream step"
                )));
            }
            (None, Some(_)) => {
                return Err(WebError::BadRequest(
                    "an edited output was given but no upstream step: choose the step whose \
                     output it replaces"
                        .into(),
                ));
            }
            (Some(input), Some(json)) => {
                let input = actions::parse_step(input)?;
                command.inputs.insert(input, json_object(input, json)?);
            }
        }
        Ok(command)
    }
}

/// The edited output of `step` as a JSON object, or a 400 that says where it is wrong.
fn json_object(step: StepId, json: &str) -> Result<Map<String, Value>, WebError> {
    let value: Value = serde_json::from_str(json).map_err(|e| {
        WebError::BadRequest(format!(
            "the edited output of {step} is not valid JSON: {e}"
        ))
    })?;
    match value {
        Value::Object(object) => Ok(object),
        other => Err(WebError::BadRequest(format!(
            "the edited output of {step} must be a JSON object ({{\"field\": …}}), not {}",
            kind(&other)
        ))),
    }
}

/// What kind of JSON value this is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The replay form of a step, with its variant options folded away; outside the live region,
/// so that what is typed survives updates.
pub(super) fn replay_form(state: &WebState, task_id: TaskId, step: StepId) -> Markup {
    let read_only = state
        .settings()
        .read_only
        .as_deref()
        .map(|reason| format!("This server takes no work: {reason}"));
    let stage = step.stage();
    let upstream = stage.earlier();
    let has_later = stage != Stage::Review;
    let id = |field: &str| format!("replay-{stage}-{field}");
    html! {
        form.replay-form method="post" action={ "/task/" (task_id) "/replay" } {
            input type="hidden" name="step" value=(step);
            (layout::csrf_field(state))
            label {
                "Reason "
                input type="text" name="reason" maxlength="2000"
                    placeholder="optional: why run it again";
            }
            " "
            button.replay-button type="submit" disabled[read_only.is_some()] title=[read_only] {
                "Replay"
            }
            span.muted.replay-help {
                "Runs this step again on its own; later steps are not re-run unless you ask below."
            }
            details.replay-variant id=(id("variant")) {
                summary { "Variant: another model, provider, prompt or input" }
                div.variant-fields {
                    div.field {
                        label for=(id("model")) { "Model" }
                        input id=(id("model")) type="text" name="model" maxlength="200"
                            autocomplete="off" placeholder="the configured model";
                    }
                    div.field {
                        label for=(id("provider")) { "Provider" }
                        select id=(id("provider")) name="provider" {
                            option value="" selected { "the default LLM" }
                            @for provider in state.pipeline().providers() {
                                option value=(provider) { (provider) }
                            }
                        }
                    }
                    div.field.wide {
                        label for=(id("prompt")) {
                            "Edited prompt " span.muted { "(optional, this attempt only)" }
                        }
                        textarea id=(id("prompt")) name="prompt" rows="3"
                            placeholder="the task's prompt as it should read for this attempt" {}
                    }
                    @if !upstream.is_empty() {
                        fieldset.field.wide.edited-input {
                            legend { "Edited output of an upstream step " span.muted { "(optional)" } }
                            label for=(id("input-step")) { "Step" }
                            select id=(id("input-step")) name="input_step" {
                                option value="" selected { "none" }
                                @for earlier in upstream {
                                    option value=(StepId::v1(*earlier)) { (StepId::v1(*earlier)) }
                                }
                            }
                            label for=(id("input-json")) { "Its output, as a JSON object" }
                            textarea.json id=(id("input-json")) name="input_json" rows="5"
                                spellcheck="false"
                                placeholder="{\"design_summary\": \"…\", \"files_touched\": [\"hello.py\"]}" {}
                            span.form-note {
                                "Used instead of that step's artifact; the step's current output "
                                "is in " a href={ "/api/task/" (task_id) } { "the task's JSON" } "."
                            }
                        }
                    }
                    @if has_later {
                        label.checkbox.wide {
                            input type="checkbox" name="continue_downstream" value="1";
                            " Continue the later stages from the new attempt"
                        }
                    }
                }
            }
        }
    }
}

/// How a replayed attempt differed from the run, one item each: model, provider, edited
/// prompt and inputs (which can be opened), the upstream attempts it read.
pub(super) fn variant_summary(variant: &Variant) -> Markup {
    html! {
        div.attempt-variant {
            span.variant-label { "Variant:" }
            @if let Some(model) = &variant.model {
                span.variant-item { "model " code { (text::user(model)) } }
            }
            @if let Some(provider) = &variant.provider {
                span.variant-item { "provider " code { (text::user(provider)) } }
            }
            @if variant.prompt.is_some() {
                span.variant-item { "edited prompt" }
            }
            @for step in variant.inputs.keys() {
                span.variant-item { "edited input " code { (step) } }
            }
            @for (step, attempt) in &variant.pinned {
                span.variant-item.muted title="the upstream attempt it read" {
                    "read " code { (step) } " #" (attempt)
                }
            }
            @if variant.continue_downstream {
                span.variant-item { "later stages run again" }
            }
            @if !variant.changes_anything() && variant.pinned.is_empty() {
                span.variant-item.muted { "as the run" }
            }
        }
        @if variant.prompt.is_some() || !variant.inputs.is_empty() {
            details.variant-edits {
                summary { "What was edited" }
                @if let Some(prompt) = &variant.prompt {
                    h4 { "Prompt" }
                    (text::controls_warning(prompt))
                    pre.prompt { (text::revealed(prompt)) }
                }
                @for (step, output) in &variant.inputs {
                    h4 { "Output of " code { (step) } }
                    pre.artifact-text {
                        (text::revealed(&serde_json::to_string_pretty(output).unwrap_or_default()))
                    }
                }
            }
        }
    }
}

/// What a variant edited, in a few words: `prompt, input design@v1`, or `nothing`.
pub(super) fn edited_words(variant: Option<&Variant>) -> String {
    let Some(variant) = variant else {
        return "nothing".to_owned();
    };
    let mut edits: Vec<String> = Vec::new();
    if variant.prompt.is_some() {
        edits.push("prompt".to_owned());
    }
    edits.extend(variant.inputs.keys().map(|step| format!("input {step}")));
    if edits.is_empty() {
        "nothing".to_owned()
    } else {
        edits.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> ReplayForm {
        let fields: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        serde_json::from_value(Value::Object(fields)).expect("a form")
    }

    #[test]
    fn a_variant_form_reads_into_a_replay_command() {
        let task_id = TaskId::new();
        let command = form(&[
            ("step", "test@v1"),
            ("model", "gpt-4o"),
            ("input_step", "implement@v1"),
            ("input_json", "{\"diff_summary\":\"x\"}"),
            ("continue_downstream", "1"),
        ])
        .command(task_id)
        .expect("a valid form");
        assert_eq!(command.model.as_deref(), Some("gpt-4o"));
        assert!(command.continue_downstream);
        let input = StepId::v1(Stage::Implement);
        assert_eq!(command.inputs[&input]["diff_summary"], "x");
        let plain = form(&[
            ("step", "design@v1"),
            ("input_step", ""),
            ("input_json", " "),
        ])
        .command(task_id)
        .expect("a plain replay");
        assert!(plain.inputs.is_empty() && !plain.continue_downstream);
    }

    #[test]
    fn a_half_given_or_malformed_edited_output_says_what_to_fix() {
        let task_id = TaskId::new();
        let cases = [
            (
                vec![("input_step", "design@v1")],
                "no edited output was given for design@v1",
            ),
            (vec![("input_json", "{}")], "no upstream step"),
            (
                vec![("input_step", "design@v1"), ("input_json", "{nope")],
                "the edited output of design@v1 is not valid JSON",
            ),
            (
                vec![("input_step", "design@v1"), ("input_json", "[1]")],
                "must be a JSON object",
            ),
        ];
        for (fields, expected) in cases {
            let mut all = vec![("step", "implement@v1")];
            all.extend(fields);
            let error = form(&all).command(task_id).expect_err("refused");
            assert!(matches!(error, WebError::BadRequest(_)), "{error:?}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
