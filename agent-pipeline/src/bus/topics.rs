//! Topic names, configurable as in mission.md.

/// The topic names the services use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `TASK_TOPIC`: new tasks and replay commands.
    pub tasks: String,
    /// `STEP_REQUESTS_TOPIC`: one unit of work each.
    pub step_requests: String,
    /// `STEP_RESULTS_TOPIC`: the outcome of each unit of work.
    pub step_results: String,
    /// `REPORT_TOPIC`: human-readable status events.
    pub reports: String,
    /// `CI_WATCH_TOPIC`: changes whose checks to watch.
    pub ci_watch: String,
    /// `DLQ_TOPIC`: what could not be handled.
    pub dlq: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            tasks: "agent_tasks".into(),
            step_requests: "step_requests".into(),
            step_results: "step_results".into(),
            reports: "agent_reports".into(),
            ci_watch: "ci_watch".into(),
            dlq: "agent_dlq".into(),
        }
    }
}

impl Topics {
    /// The environment variable and default of each topic.
    pub const VARIABLES: [(&'static str, &'static str); 6] = [
        ("TASK_TOPIC", "agent_tasks"),
        ("STEP_REQUESTS_TOPIC", "step_requests"),
        ("STEP_RESULTS_TOPIC", "step_results"),
        ("REPORT_TOPIC", "agent_reports"),
        ("CI_WATCH_TOPIC", "ci_watch"),
        ("DLQ_TOPIC", "agent_dlq"),
    ];

    /// The topics named by `lookup(variable)`, with defaults for unset ones.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |index: usize| {
            let (variable, default) = Self::VARIABLES[index];
            lookup(variable)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        Self {
            tasks: get(0),
            step_requests: get(1),
            step_results: get(2),
            reports: get(3),
            ci_watch: get(4),
            dlq: get(5),
        }
    }

    /// The topics named by the environment, with defaults for unset variables.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The same topics with `prefix` in front of each name (one test, one set of topics).
    pub fn with_prefix(&self, prefix: &str) -> Self {
        let p = |name: &str| format!("{prefix}{name}");
        Self {
            tasks: p(&self.tasks),
            step_requests: p(&self.step_requests),
            step_results: p(&self.step_results),
            reports: p(&self.reports),
            ci_watch: p(&self.ci_watch),
            dlq: p(&self.dlq),
        }
    }
}
