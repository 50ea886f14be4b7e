//! What is running, and for how long, while a command waits for the pipeline.
//!
//! On a terminal one line on stderr is redrawn every second; otherwise (a log file, CI) a line
//! is written every ten seconds, so that a slow step is visible without flooding the output.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use agent_pipeline::StepId;
use agent_pipeline::wire::{ReportEvent, ReportStatus};

/// How often the line is redrawn on a terminal.
const TERMINAL_PERIOD: Duration = Duration::from_secs(1);
/// How often a line is written when stderr is not a terminal.
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// The progress display of one wait.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Whether stderr is a terminal (redraw in place) or not (append lines).
    terminal: bool,
    /// When the wait began.
    started: Instant,
    /// The step running now, and since when.
    running: Option<(StepId, Instant)>,
    /// Whether a line is drawn on the terminal and must be erased before other output.
    drawn: bool,
}

impl Progress {
    /// A display on stderr, with nothing running yet.
    pub(crate) fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            running: None,
            drawn: false,
        }
    }

    /// How often [`Progress::tick`] should be called.
    pub(crate) fn period(&self) -> Duration {
        if self.terminal {
            TERMINAL_PERIOD
        } else {
            LOG_PERIOD
        }
    }

    /// A timer that fires every [`Progress::period`], first after one period.
    pub(crate) fn ticker(&self) -> tokio::time::Interval {
        let period = self.period();
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker
    }

    /// Notes that `step` runs from now on (or nothing, with `None`).
    pub(crate) fn set_running(&mut self, step: Option<StepId>) {
        let same = self.running.map(|(s, _)| s) == step;
        if !same {
            self.running = step.map(|s| (s, Instant::now()));
        }
    }

    /// Follows the pipeline: what runs after `event`.
    pub(crate) fn on_event(&mut self, event: &ReportEvent) {
        if let Some(next) = running_after(self.running.map(|(s, _)| s), event) {
            self.set_running(next);
        }
    }

    /// Shows what is running now.
    pub(crate) fn tick(&mut self) {
        let line = status_line(
            self.running.map(|(step, since)| (step, since.elapsed())),
            self.started.elapsed(),
        );
        let mut stderr = std::io::stderr().lock();
        // Progress is a courtesy: a closed stderr must not end the command.
        let _ = if self.terminal {
            self.drawn = true;
            write!(stderr, "\r\x1b[2K{line}").and_then(|()| stderr.flush())
        } else {
            writeln!(stderr, "{line}")
        };
    }

    /// Erases the line on a terminal, before other output is written.
    pub(crate) fn clear(&mut self) {
        if self.drawn {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K").and_then(|()| stderr.flush());
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// What runs after `event`, given that `current` was running: `Some(None)` when nothing runs
/// any more, `None` when the event changes nothing.
pub(crate) fn running_after(
    current: Option<StepId>,
    event: &ReportEvent,
) -> Option<Option<StepId>> {
    match event.status {
        ReportStatus::Received => Some(Some(StepId::v1(agent_pipeline::Stage::Design))),
        ReportStatus::StageDone => Some(event.stage.and_then(|step| step.next())),
        ReportStatus::Retry => Some(event.stage.or(current)),
        ReportStatus::Done
        | ReportStatus::Error
        | ReportStatus::Replayed
        | ReportStatus::AwaitingApproval
        | ReportStatus::Approved => Some(None),
        _ => None,
    }
}

/// The progress line: `implement@v1 running for 3s (12s in all)`.
pub(crate) fn status_line(running: Option<(StepId, Duration)>, total: Duration) -> String {
    match running {
        Some((step, for_how_long)) => format!(
            "… {step} running for {}s ({}s in all)",
            for_how_long.as_secs(),
            total.as_secs()
        ),
        None => format!("… waiting ({}s in all)", total.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_pipeline::{Stage, TaskId};

    fn event(status: ReportStatus, stage: Option<Stage>) -> ReportEvent {
        let mut event = ReportEvent::new(TaskId::new(), status, "x", chrono::Utc::now());
        event.stage = stage.map(StepId::v1);
        event
    }

    #[test]
    fn the_running_stage_follows_the_reports() {
        let design = Some(StepId::v1(Stage::Design));
        let implement = Some(StepId::v1(Stage::Implement));
        assert_eq!(
            running_after(None, &event(ReportStatus::Received, None)),
            Some(design)
        );
        assert_eq!(
            running_after(design, &event(ReportStatus::StageDone, Some(Stage::Design))),
            Some(implement)
        );
        assert_eq!(
            running_after(
                implement,
                &event(ReportStatus::Retry, Some(Stage::Implement))
            ),
            Some(implement)
        );
        assert_eq!(
            running_after(None, &event(ReportStatus::StageDone, Some(Stage::Review))),
            Some(None)
        );
        assert_eq!(
            running_after(implement, &event(ReportStatus::Dlq, Some(Stage::Implement))),
            None
        );
        assert_eq!(
            running_after(
                implement,
                &event(ReportStatus::Error, Some(Stage::Implement))
            ),
            Some(None)
        );
    }

    #[test]
    fn the_line_says_what_runs_and_for_how_long() {
        let line = status_line(
            Some((StepId::v1(Stage::Test), Duration::from_millis(3_900))),
            Duration::from_secs(12),
        );
        assert_eq!(line, "… test@v1 running for 3s (12s in all)");
        assert_eq!(
            status_line(None, Duration::from_secs(1)),
            "… waiting (1s in all)"
        );
    }
}
