//! How a sandboxed run is described to people and models.

use super::sandbox::RunOutput;

impl RunOutput {
    /// How the run ended: `exit code 0`, `killed after 60.0s (time limit)`, `killed by a signal`.
    pub fn ending(&self) -> String {
        match (self.timed_out, self.exit_code) {
            (true, _) => format!(
                "killed after {:.1}s (time limit)",
                self.duration_ms as f64 / 1000.0
            ),
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) => "killed by a signal".to_owned(),
        }
    }

    /// The last `max` bytes of the captured output, cut at a character boundary.
    pub fn output_tail(&self, max: usize) -> &str {
        let text = self.output.as_str();
        if text.len() <= max {
            return text;
        }
        let mut start = text.len() - max;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        &text[start..]
    }
}
