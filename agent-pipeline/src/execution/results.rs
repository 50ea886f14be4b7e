//! Real test counts from a run: read from a test runner's printed summary
//! ([`counts_from_output`]) or from a JUnit XML report ([`counts_from_junit`]).
//!
//! The printed summaries understood are those of pytest, unittest, `cargo test` and TAP
//! producers such as `node --test`. How the runners' own categories are mapped:
//!
//! | runner    | passed                 | failed                      | errors      | skipped                     |
//! |-----------|------------------------|-----------------------------|-------------|-----------------------------|
//! | pytest    | passed, xpassed        | failed                      | error(s)    | skipped, xfailed            |
//! | unittest  | the rest of `Ran N`    | failures, unexpected successes | errors   | skipped, expected failures  |
//! | cargo     | passed                 | failed                      | —           | ignored                     |
//! | TAP/node  | pass, `ok`             | fail, `not ok`              | cancelled, planned but not run | skip(ped), todo |
//!
//! pytest's `deselected`, `warnings` and `rerun`, and cargo's `measured` and `filtered out`
//! are not tests that ran and are not counted.

use std::borrow::Cow;
use std::sync::LazyLock;

use quick_xml::events::{BytesStart, Event};
use regex::Regex;

/// Test counts read from a real run.
///
/// `total` is always `passed + failed + errors + skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestCounts {
    /// Tests that ran (passed + failed + errors + skipped).
    pub total: u32,
    /// Tests that passed.
    pub passed: u32,
    /// Tests that failed an assertion.
    pub failed: u32,
    /// Tests that raised an error.
    pub errors: u32,
    /// Tests that were skipped.
    pub skipped: u32,
    /// Where the counts come from: `junit`, `pytest`, `unittest`, `cargo`, `tap`.
    pub source: &'static str,
}

impl TestCounts {
    /// Counts from `source` with the total worked out.
    fn new(source: &'static str, passed: u32, failed: u32, errors: u32, skipped: u32) -> Self {
        Self {
            total: passed
                .saturating_add(failed)
                .saturating_add(errors)
                .saturating_add(skipped),
            passed,
            failed,
            errors,
            skipped,
            source,
        }
    }

    /// Whether no test failed or raised an error (also true when no test ran).
    ///
    /// ```
    /// use agent_pipeline::execution::results::counts_from_output;
    /// let counts = counts_from_output("Ran 2 tests in 0.001s\n\nOK\n").expect("a summary");
    /// assert!(counts.all_passed());
    /// ```
    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.errors == 0
    }
}

/// Reads the counts from a test runner's printed summary, if it printed one this module knows.
///
/// When the output holds several summaries the last one is used, except for `cargo test`
/// whose `test result:` lines (one per test binary) are added up. A truncation marker
/// `[… N bytes omitted …]` and the partial lines around it are ignored, and so are ANSI
/// colour codes.
///
/// ```
/// use agent_pipeline::execution::results::counts_from_output;
///
/// let output = "collected 4 items\n\ntest_app.py ..Fs\n\
///               ========== 1 failed, 2 passed, 1 skipped in 0.12s ==========\n";
/// let counts = counts_from_output(output).expect("a pytest summary");
/// assert_eq!((counts.total, counts.passed, counts.failed, counts.skipped), (4, 2, 1, 1));
/// assert_eq!(counts.source, "pytest");
///
/// assert_eq!(counts_from_output("Segmentation fault"), None);
/// ```
pub fn counts_from_output(output: &str) -> Option<TestCounts> {
    let lines = clean_lines(output);
    [
        pytest(&lines),
        unittest(&lines),
        cargo(&lines),
        tap_summary(&lines),
        tap_lines(&lines),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|(position, _)| *position)
    .map(|(_, counts)| counts)
}

/// Matches the marker a truncated output carries where bytes were cut out.
static TRUNCATION: LazyLock<Regex> =
    LazyLock::new(|| regex(r"\[(?:…|\.\.\.)\s*\d+\s+bytes?\s+omitted\s*(?:…|\.\.\.)\]"));
/// Matches an ANSI escape sequence (colours, cursor moves).
static ANSI: LazyLock<Regex> = LazyLock::new(|| regex(r"\x1b\[[0-9;?]*[A-Za-z]"));

/// Compiles one of this module's fixed patterns.
fn regex(pattern: &str) -> Regex {
    match Regex::new(pattern) {
        Ok(regex) => regex,
        // The patterns are constants, checked by the unit tests.
        Err(e) => panic!("invalid built-in pattern {pattern:?}: {e}"),
    }
}

/// The output's lines without colours, carriage-return overwrites and trailing space; a line
/// with a truncation marker becomes empty (what surrounds the marker are partial lines).
fn clean_lines(output: &str) -> Vec<Cow<'_, str>> {
    output
        .lines()
        .map(|line| {
            if TRUNCATION.is_match(line) {
                return Cow::Borrowed("");
            }
            // A progress display rewrites its line after `\r`: keep what was written last.
            let line = line.rsplit('\r').next().unwrap_or(line);
            match ANSI.replace_all(line, "") {
                Cow::Borrowed(line) => Cow::Borrowed(line.trim_end()),
                Cow::Owned(line) => Cow::Owned(line.trim_end().to_owned()),
            }
        })
        .collect()
}

/// A count parsed from digits that a regex already matched; absurdly large values saturate.
fn number(digits: &str) -> u32 {
    digits.parse().unwrap_or(u32::MAX)
}

/// pytest's final line: `===== 1 failed, 2 passed in 0.12s =====`, or the same without the
/// `=` in `-q` mode, or `no tests ran in 0.01s`.
static PYTEST_LINE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"^=*\s*(?P<items>(?:no tests ran|\d+ [a-z]+)(?:, (?:\d+ [a-z]+))*) in \d+(?:\.\d+)?\s*(?:s|seconds)(?: \([0-9:.]+\))?\s*=*$",
    )
});

/// The last pytest summary, with its line number.
fn pytest(lines: &[Cow<'_, str>]) -> Option<(usize, TestCounts)> {
    lines.iter().enumerate().rev().find_map(|(index, line)| {
        let captures = PYTEST_LINE.captures(line.trim_start())?;
        let items = captures.name("items")?.as_str();
        let (mut passed, mut failed, mut errors, mut skipped) = (0u32, 0u32, 0u32, 0u32);
        let mut known = false;
        for item in items.split(", ") {
            if item == "no tests ran" {
                known = true;
                continue;
            }
            let (count, word) = item.split_once(' ')?;
            let count = number(count);
            let slot = match word {
                "passed" | "xpassed" => &mut passed,
                "failed" => &mut failed,
                "error" | "errors" => &mut errors,
                "skipped" | "xfailed" => &mut skipped,
                "deselected" | "warning" | "warnings" | "rerun" | "reruns" => {
                    known = true;
                    continue;
                }
                _ => continue,
            };
            known = true;
            *slot = slot.saturating_add(count);
        }
        known.then(|| {
            (
                index,
                TestCounts::new("pytest", passed, failed, errors, skipped),
            )
        })
    })
}

/// unittest's `Ran 3 tests in 0.001s`.
static UNITTEST_RAN: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^Ran (\d+) tests? in \d+(?:\.\d+)?s$"));
/// unittest's verdict after the `Ran` line: `OK`, `OK (skipped=1)`, `FAILED (failures=1)`,
/// `NO TESTS RAN` (Python 3.12+).
static UNITTEST_VERDICT: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^(?:OK|FAILED|NO TESTS RAN)(?: \((?P<details>[^)]*)\))?$"));

/// The last unittest summary, with the line number of its verdict.
fn unittest(lines: &[Cow<'_, str>]) -> Option<(usize, TestCounts)> {
    lines.iter().enumerate().rev().find_map(|(index, line)| {
        let ran = number(UNITTEST_RAN.captures(line.trim())?.get(1)?.as_str());
        // The verdict follows after an empty line; allow a little noise in between.
        let (verdict_index, verdict) = lines
            .iter()
            .enumerate()
            .skip(index + 1)
            .filter(|(_, line)| !line.trim().is_empty())
            .take(3)
            .find_map(|(i, line)| Some((i, UNITTEST_VERDICT.captures(line.trim())?)))?;
        let (mut failures, mut errors, mut skipped, mut expected, mut unexpected) =
            (0u32, 0u32, 0u32, 0u32, 0u32);
        if let Some(details) = verdict.name("details") {
            for item in details.as_str().split(',') {
                let Some((key, value)) = item.split_once('=') else {
                    continue;
                };
                let Ok(value) = value.trim().parse::<u32>() else {
                    continue;
                };
                match key.trim() {
                    "failures" => failures = value,
                    "errors" => errors = value,
                    "skipped" => skipped = value,
                    "expected failures" => expected = value,
                    "unexpected successes" => unexpected = value,
                    _ => {}
                }
            }
        }
        let not_passed = failures
            .saturating_add(errors)
            .saturating_add(skipped)
            .saturating_add(expected)
            .saturating_add(unexpected);
        Some((
            verdict_index,
            TestCounts::new(
                "unittest",
                ran.saturating_sub(not_passed),
                failures.saturating_add(unexpected),
                errors,
                skipped.saturating_add(expected),
            ),
        ))
    })
}

/// `cargo test`'s `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; …`.
static CARGO_RESULT: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^test result: [A-Za-z]+\. (?P<items>.*)$"));
/// One `N word` item of a `test result:` line.
static CARGO_ITEM: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^(\d+) (passed|failed|ignored|measured|filtered out)$"));

/// The sum of every `cargo test` result line, with the line number of the last one.
fn cargo(lines: &[Cow<'_, str>]) -> Option<(usize, TestCounts)> {
    let mut last = None;
    let (mut passed, mut failed, mut ignored) = (0u32, 0u32, 0u32);
    for (index, line) in lines.iter().enumerate() {
        let Some(captures) = CARGO_RESULT.captures(line.trim()) else {
            continue;
        };
        let Some(items) = captures.name("items") else {
            continue;
        };
        let mut found = false;
        for item in items.as_str().split(';') {
            let Some(item) = CARGO_ITEM.captures(item.trim()) else {
                continue;
            };
            let (Some(count), Some(word)) = (item.get(1), item.get(2)) else {
                continue;
            };
            let count = number(count.as_str());
            match word.as_str() {
                "passed" => passed = passed.saturating_add(count),
                "failed" => failed = failed.saturating_add(count),
                "ignored" => ignored = ignored.saturating_add(count),
                _ => {}
            }
            found = true;
        }
        if found {
            last = Some(index);
        }
    }
    last.map(|index| (index, TestCounts::new("cargo", passed, failed, 0, ignored)))
}

/// One line of a TAP summary comment block: `# pass 3` (node's spec reporter: `ℹ pass 3`;
/// tape pads with two spaces).
static TAP_COUNT: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"^(?:#|ℹ)\s+(tests|suites|pass|fail|cancelled|skipped|skip|todo|duration_ms)\s+(\d+(?:\.\d+)?)$",
    )
});

/// The last block of TAP summary comments that has `pass` or `fail`, with its last line.
fn tap_summary(lines: &[Cow<'_, str>]) -> Option<(usize, TestCounts)> {
    let mut best = None;
    let mut block: Option<(usize, [u32; 4], bool)> = None;
    for (index, line) in lines.iter().enumerate() {
        let Some(captures) = TAP_COUNT.captures(line.trim()) else {
            if let Some((end, counts, true)) = block.take() {
                best = Some((end, counts));
            }
            continue;
        };
        let (Some(key), Some(value)) = (captures.get(1), captures.get(2)) else {
            continue;
        };
        let (end, counts, has_result) = block.get_or_insert((index, [0; 4], false));
        *end = index;
        // passed, failed, errors, skipped
        let slot = match key.as_str() {
            "pass" => 0,
            "fail" => 1,
            "cancelled" => 2,
            "skipped" | "skip" | "todo" => 3,
            _ => continue,
        };
        *has_result |= slot <= 1;
        counts[slot] = counts[slot].saturating_add(number(value.as_str()));
    }
    if let Some((end, counts, true)) = block {
        best = Some((end, counts));
    }
    best.map(|(end, [passed, failed, errors, skipped])| {
        (end, TestCounts::new("tap", passed, failed, errors, skipped))
    })
}

/// A TAP plan, `1..N` (possibly `1..0 # SKIP reason`).
static TAP_PLAN: LazyLock<Regex> = LazyLock::new(|| regex(r"^1\.\.(\d+)(?:\s*#.*)?$"));
/// A top-level TAP test line, `ok 1 - name` or `not ok 2 name # TODO`.
static TAP_TEST: LazyLock<Regex> = LazyLock::new(|| regex(r"^(?P<not>not )?ok(?:\s|$)"));
/// A TAP directive that makes a test neither pass nor fail: `# SKIP …`, `# TODO …`.
static TAP_DIRECTIVE: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i-u)#\s*(?:skip|todo)\b"));

/// Counts top-level `ok` / `not ok` lines when there is a plan; planned tests that did not
/// report (a bail-out, a crash) count as errors.
fn tap_lines(lines: &[Cow<'_, str>]) -> Option<(usize, TestCounts)> {
    let mut plan: Option<(usize, u32)> = None;
    let mut last = 0;
    let (mut passed, mut failed, mut skipped) = (0u32, 0u32, 0u32);
    for (index, line) in lines.iter().enumerate() {
        // Subtests are indented; only the top level is counted.
        if let Some(captures) = TAP_PLAN.captures(line) {
            plan = captures.get(1).map(|n| (index, number(n.as_str())));
            continue;
        }
        let Some(captures) = TAP_TEST.captures(line) else {
            continue;
        };
        last = index;
        if TAP_DIRECTIVE.is_match(line) {
            skipped = skipped.saturating_add(1);
        } else if captures.name("not").is_some() {
            failed = failed.saturating_add(1);
        } else {
            passed = passed.saturating_add(1);
        }
    }
    let (plan_index, planned) = plan?;
    let reported = passed.saturating_add(failed).saturating_add(skipped);
    let missing = planned.saturating_sub(reported);
    Some((
        plan_index.max(last),
        TestCounts::new("tap", passed, failed, missing, skipped),
    ))
}

/// Reads the counts from a JUnit XML report.
///
/// The report is a `<testsuites>` element or a single `<testsuite>`. The counts are the sum
/// of the outermost `<testsuite>` elements' `tests`, `failures`, `errors` and `skipped`
/// attributes (nested suites are part of their parent's counts); an attribute that is
/// missing is replaced by counting the suite's `<testcase>` elements and their `<failure>`,
/// `<error>` and `<skipped>` children. `passed = tests − failures − errors − skipped`.
///
/// ```
/// use agent_pipeline::execution::results::counts_from_junit;
///
/// let xml = r#"<?xml version="1.0" encoding="utf-8"?>
/// <testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4">
///   <testcase classname="test_app" name="test_ok" time="0.001"/>
/// </testsuite></testsuites>"#;
/// let counts = counts_from_junit(xml)?;
/// assert_eq!((counts.total, counts.passed, counts.failed, counts.skipped), (4, 2, 1, 1));
///
/// assert!(counts_from_junit("<testsuite><testcase>").is_err());
/// # Ok::<(), String>(())
/// ```
///
/// # Errors
///
/// A message when the text is not well-formed XML, its root element is not `<testsuites>` or
/// `<testsuite>`, or a count attribute is not a number.
pub fn counts_from_junit(xml: &str) -> Result<TestCounts, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    // The names of the open elements.
    let mut open: Vec<Vec<u8>> = Vec::new();
    let mut root: Option<Tally> = None;
    let mut suites: Vec<Tally> = Vec::new();
    // The outermost suite being read, with its depth in `open`.
    let mut suite: Option<(usize, Tally)> = None;
    // Test cases outside any suite.
    let mut loose = Tally::default();
    // The test case being read, with its depth and what its children said.
    let mut case: Option<(usize, Outcome)> = None;

    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "malformed junit xml at byte {}: {e}",
                reader.error_position()
            )
        })?;
        let (start, empty) = match &event {
            Event::Start(start) => (start, false),
            Event::Empty(start) => (start, true),
            Event::End(_) => {
                let depth = open.len();
                open.pop();
                if let Some((case_depth, outcome)) = case
                    && case_depth == depth
                {
                    target(&mut suite, &mut loose).add_case(outcome);
                    case = None;
                }
                if let Some((suite_depth, _)) = &suite
                    && *suite_depth == depth
                    && let Some((_, tally)) = suite.take()
                {
                    suites.push(tally);
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = start.local_name().as_ref().to_vec();
        let depth = open.len() + 1;
        if open.is_empty() {
            if root.is_some() {
                return Err("malformed junit xml: more than one root element".to_owned());
            }
            if name != b"testsuites" && name != b"testsuite" {
                return Err(format!(
                    "not a junit report: the root element is <{}>",
                    String::from_utf8_lossy(&name)
                ));
            }
            root = Some(Tally::from_attributes(start)?);
        }
        match name.as_slice() {
            b"testsuite" if suite.is_none() => {
                let tally = Tally::from_attributes(start)?;
                if empty {
                    suites.push(tally);
                } else {
                    suite = Some((depth, tally));
                }
            }
            b"testcase" if case.is_none() => {
                if empty {
                    target(&mut suite, &mut loose).add_case(Outcome::Passed);
                } else {
                    case = Some((depth, Outcome::Passed));
                }
            }
            b"error" => set_outcome(&mut case, Outcome::Error),
            b"failure" => set_outcome(&mut case, Outcome::Failure),
            b"skipped" => set_outcome(&mut case, Outcome::Skipped),
            _ => {}
        }
        if !empty {
            open.push(name);
        }
    }

    if let Some(name) = open.last() {
        return Err(format!(
            "malformed junit xml: the document ends inside <{}>",
            String::from_utf8_lossy(name)
        ));
    }
    let Some(root) = root else {
        return Err("not a junit report: there is no root element".to_owned());
    };
    if loose.children.tests > 0 {
        suites.push(loose);
    }
    if suites.is_empty() {
        // `<testsuites tests="0"/>`, or totals on the root only.
        suites.push(root);
    }
    let mut sum = Counts::default();
    for suite in &suites {
        let counts = suite.resolve();
        sum.tests = sum.tests.saturating_add(counts.tests);
        sum.failures = sum.failures.saturating_add(counts.failures);
        sum.errors = sum.errors.saturating_add(counts.errors);
        sum.skipped = sum.skipped.saturating_add(counts.skipped);
    }
    let passed = sum
        .tests
        .saturating_sub(sum.failures)
        .saturating_sub(sum.errors)
        .saturating_sub(sum.skipped);
    Ok(TestCounts::new(
        "junit",
        passed,
        sum.failures,
        sum.errors,
        sum.skipped,
    ))
}

/// What a test case's children say about it; a later, worse child wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Passed,
    Skipped,
    Failure,
    Error,
}

fn set_outcome(case: &mut Option<(usize, Outcome)>, outcome: Outcome) {
    if let Some((_, current)) = case {
        *current = (*current).max(outcome);
    }
}

/// The tally test cases are added to: the open outermost suite, else the loose one.
fn target<'a>(suite: &'a mut Option<(usize, Tally)>, loose: &'a mut Tally) -> &'a mut Tally {
    match suite {
        Some((_, tally)) => tally,
        None => loose,
    }
}

/// The four JUnit counts.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    tests: u32,
    failures: u32,
    errors: u32,
    skipped: u32,
}

/// One suite: the counts its attributes state and those of the test cases read inside it.
#[derive(Debug, Clone, Default)]
struct Tally {
    tests: Option<u32>,
    failures: Option<u32>,
    errors: Option<u32>,
    skipped: Option<u32>,
    children: Counts,
}

impl Tally {
    fn from_attributes(element: &BytesStart<'_>) -> Result<Self, String> {
        let element_name = String::from_utf8_lossy(element.local_name().as_ref()).into_owned();
        let mut tally = Tally::default();
        for attribute in element.attributes() {
            let attribute = attribute.map_err(|e| {
                format!("malformed junit xml: bad attribute on <{element_name}>: {e}")
            })?;
            let key = attribute.key.local_name();
            let slot = match key.as_ref() {
                b"tests" => &mut tally.tests,
                b"failures" => &mut tally.failures,
                b"errors" => &mut tally.errors,
                b"skipped" | b"skip" if tally.skipped.is_none() => &mut tally.skipped,
                _ => continue,
            };
            let value = String::from_utf8_lossy(&attribute.value);
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let count = value.parse::<u32>().map_err(|_| {
                format!(
                    "not a junit report: {} is {value:?} on <{element_name}>, not a count",
                    String::from_utf8_lossy(key.as_ref())
                )
            })?;
            *slot = Some(count);
        }
        Ok(tally)
    }

    fn add_case(&mut self, outcome: Outcome) {
        let children = &mut self.children;
        children.tests = children.tests.saturating_add(1);
        let slot = match outcome {
            Outcome::Passed => return,
            Outcome::Skipped => &mut children.skipped,
            Outcome::Failure => &mut children.failures,
            Outcome::Error => &mut children.errors,
        };
        *slot = slot.saturating_add(1);
    }

    /// The stated counts, with the counted ones where an attribute is missing.
    fn resolve(&self) -> Counts {
        Counts {
            tests: self.tests.unwrap_or(self.children.tests),
            failures: self.failures.unwrap_or(self.children.failures),
            errors: self.errors.unwrap_or(self.children.errors),
            skipped: self.skipped.unwrap_or(self.children.skipped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(output: &str) -> TestCounts {
        counts_from_output(output).unwrap_or_else(|| panic!("no summary found in:\n{output}"))
    }

    /// (total, passed, failed, errors, skipped, source)
    fn tuple(c: TestCounts) -> (u32, u32, u32, u32, u32, &'static str) {
        (c.total, c.passed, c.failed, c.errors, c.skipped, c.source)
    }

    #[test]
    fn all_patterns_compile() {
        for pattern in [
            &TRUNCATION,
            &ANSI,
            &PYTEST_LINE,
            &UNITTEST_RAN,
            &UNITTEST_VERDICT,
            &CARGO_RESULT,
            &CARGO_ITEM,
            &TAP_COUNT,
            &TAP_PLAN,
            &TAP_TEST,
            &TAP_DIRECTIVE,
        ] {
            LazyLock::force(pattern);
        }
    }

    const PYTEST_FULL: &str = "\
============================= test session starts ==============================
platform linux -- Python 3.11.7, pytest-8.3.4, pluggy-1.5.0
rootdir: /workspace
collected 7 items

test_app.py .F.Es                                                        [ 71%]
test_more.py xX                                                          [100%]

==================================== ERRORS ====================================
_________________________ ERROR at setup of test_db ___________________________
    @pytest.fixture
    def db():
>       raise RuntimeError(\"no database\")
E       RuntimeError: no database

test_app.py:5: RuntimeError
=================================== FAILURES ===================================
__________________________________ test_add ____________________________________

    def test_add():
>       assert add(1, 2) == 4
E       assert 3 == 4

test_app.py:12: AssertionError
=============================== warnings summary ===============================
test_app.py::test_old
  /workspace/test_app.py:20: DeprecationWarning: old
=========================== short test summary info ============================
FAILED test_app.py::test_add - assert 3 == 4
ERROR test_app.py::test_db - RuntimeError: no database
= 1 failed, 2 passed, 1 skipped, 2 deselected, 1 xfailed, 1 xpassed, 1 warning, 1 error in 0.12s =
";

    #[test]
    fn pytest_full_summary() {
        assert_eq!(tuple(counts(PYTEST_FULL)), (7, 3, 1, 1, 2, "pytest"));
    }

    #[test]
    fn pytest_quiet_and_plain_forms() {
        let quiet = "..F\n=== FAILURES ===\n___ test_x ___\nE assert 1 == 2\n\
                     FAILED test_x.py::test_x - assert 1 == 2\n1 failed, 2 passed in 0.05s\n";
        assert_eq!(tuple(counts(quiet)), (3, 2, 1, 0, 0, "pytest"));
        let passed =
            "============================== 5 passed in 1.02s ===============================\n";
        assert_eq!(tuple(counts(passed)), (5, 5, 0, 0, 0, "pytest"));
        let old = "===================== 2 passed, 3 errors in 0.04 seconds ======================";
        assert_eq!(tuple(counts(old)), (5, 2, 0, 3, 0, "pytest"));
        let long = "======= 120 passed, 3 warnings in 61.20s (0:01:01) =======";
        assert_eq!(tuple(counts(long)), (120, 120, 0, 0, 0, "pytest"));
        let coloured = "\x1b[32m\x1b[1m4 passed\x1b[0m\x1b[32m in 0.01s\x1b[0m\n";
        assert_eq!(tuple(counts(coloured)), (4, 4, 0, 0, 0, "pytest"));
    }

    #[test]
    fn pytest_no_tests_ran() {
        let none =
            "============================ no tests ran in 0.01s =============================\n";
        assert_eq!(tuple(counts(none)), (0, 0, 0, 0, 0, "pytest"));
        let deselected = "====== 3 deselected in 0.02s ======";
        assert_eq!(tuple(counts(deselected)), (0, 0, 0, 0, 0, "pytest"));
        let collection = "!!!!!!!!!!!!!!!!!!!! Interrupted: 1 error during collection !!!!!!!!!!!!!!!!!!!!\n\
                          =============================== 1 error in 0.08s ===============================\n";
        assert_eq!(tuple(counts(collection)), (1, 0, 0, 1, 0, "pytest"));
    }

    #[test]
    fn the_last_summary_wins() {
        let twice = "=== 1 failed, 1 passed in 0.1s ===\nrerunning\n=== 2 passed in 0.1s ===\n";
        assert_eq!(tuple(counts(twice)), (2, 2, 0, 0, 0, "pytest"));
        let mixed = "=== 3 passed in 0.1s ===\n\n----------------------------------------------------------------------\n\
                     Ran 1 test in 0.000s\n\nFAILED (failures=1)\n";
        assert_eq!(tuple(counts(mixed)), (1, 0, 1, 0, 0, "unittest"));
    }

    /// Printed by `python3 -m unittest` (Python 3.11) for a module with one passing, one
    /// failing, one erroring, one skipped test and one expected failure.
    const UNITTEST_MIXED: &str = "\
Fs.Ex
======================================================================
ERROR: test_err (test_a.T.test_err)
----------------------------------------------------------------------
Traceback (most recent call last):
  File \"/tmp/rt/test_a.py\", line 5, in test_err
    def test_err(self): raise ValueError(\"x\")
                        ^^^^^^^^^^^^^^^^^^^^^
ValueError: x

======================================================================
FAIL: test_fail (test_a.T.test_fail)
----------------------------------------------------------------------
Traceback (most recent call last):
  File \"/tmp/rt/test_a.py\", line 4, in test_fail
    def test_fail(self): self.assertEqual(1, 2)
                         ^^^^^^^^^^^^^^^^^^^^^^
AssertionError: 1 != 2

----------------------------------------------------------------------
Ran 5 tests in 0.001s

FAILED (failures=1, errors=1, skipped=1, expected failures=1)
";

    #[test]
    fn unittest_summaries() {
        assert_eq!(tuple(counts(UNITTEST_MIXED)), (5, 1, 1, 1, 2, "unittest"));
        let ok = "test_ok (test_b.T.test_ok) ... ok\ntest_skip (test_b.T.test_skip) ... skipped 'no'\n\n\
                  ----------------------------------------------------------------------\n\
                  Ran 2 tests in 0.000s\n\nOK (skipped=1)\n";
        assert_eq!(tuple(counts(ok)), (2, 1, 0, 0, 1, "unittest"));
        let plain = "...\n----------------------------------------------------------------------\n\
                     Ran 3 tests in 0.001s\n\nOK\n";
        assert_eq!(tuple(counts(plain)), (3, 3, 0, 0, 0, "unittest"));
        let failed = "Ran 6 tests in 0.010s\n\nFAILED (failures=1, errors=2, skipped=1)\n";
        assert_eq!(tuple(counts(failed)), (6, 2, 1, 2, 1, "unittest"));
        let unexpected = "Ran 2 tests in 0.010s\n\nFAILED (unexpected successes=1)\n";
        assert_eq!(tuple(counts(unexpected)), (2, 1, 1, 0, 0, "unittest"));
    }

    #[test]
    fn unittest_without_tests() {
        let none = "\n----------------------------------------------------------------------\n\
                    Ran 0 tests in 0.000s\n\nOK\n";
        assert_eq!(tuple(counts(none)), (0, 0, 0, 0, 0, "unittest"));
        let new = "Ran 0 tests in 0.000s\n\nNO TESTS RAN\n";
        assert_eq!(tuple(counts(new)), (0, 0, 0, 0, 0, "unittest"));
        // A setUpClass error: nothing ran, one error.
        let class_error = "Ran 0 tests in 0.000s\n\nFAILED (errors=1)\n";
        assert_eq!(tuple(counts(class_error)), (1, 0, 0, 1, 0, "unittest"));
        // Without a verdict the run did not finish: no counts.
        assert_eq!(counts_from_output("Ran 4 tests in 0.1s\n"), None);
    }

    const CARGO: &str = "\
   Compiling calc v0.1.0 (/workspace)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 0.52s
     Running unittests src/lib.rs (target/debug/deps/calc-1f2e3d4c5b6a7980)

running 4 tests
test tests::adds ... ok
test tests::divides ... FAILED
test tests::slow ... ignored
test tests::subtracts ... ok

failures:

---- tests::divides stdout ----
thread 'tests::divides' panicked at src/lib.rs:20:9:
assertion `left == right` failed
  left: 1
 right: 2

failures:
    tests::divides

test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/api.rs (target/debug/deps/api-0a1b2c3d4e5f6a7b)

running 3 tests
test one ... ok
test two ... ok
test three ... ok

test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

   Doc-tests calc

running 1 test
test src/lib.rs - add (line 3) ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 2 filtered out; finished in 0.13s

error: 1 target failed:
    `--lib`
";

    #[test]
    fn cargo_sums_every_binary() {
        assert_eq!(tuple(counts(CARGO)), (8, 6, 1, 0, 1, "cargo"));
        let none = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        assert_eq!(tuple(counts(none)), (0, 0, 0, 0, 0, "cargo"));
    }

    /// Printed by `node --test` (v20, TAP reporter) for one passing, one failing, one
    /// skipped and one todo test.
    const NODE_TAP: &str = "\
TAP version 13
# Subtest: a
ok 1 - a
  ---
  duration_ms: 0.533651
  ...
# Subtest: b
not ok 2 - b
  ---
  duration_ms: 0.68947
  failureType: 'testCodeFailure'
  error: |-
    Expected values to be strictly equal:

    1 !== 2

  code: 'ERR_ASSERTION'
  ...
# Subtest: c
ok 3 - c # SKIP
  ---
  duration_ms: 0.068126
  ...
# Subtest: d
ok 4 - d # TODO
  ---
  duration_ms: 0.193768
  ...
1..4
# tests 4
# suites 0
# pass 1
# fail 1
# cancelled 0
# skipped 1
# todo 1
# duration_ms 132.54373
";

    #[test]
    fn node_tap_summary() {
        assert_eq!(tuple(counts(NODE_TAP)), (4, 1, 1, 0, 2, "tap"));
    }

    #[test]
    fn node_spec_reporter_summary() {
        let spec = "✔ a (0.5ms)\n✖ b (0.7ms)\nℹ tests 3\nℹ suites 0\nℹ pass 2\nℹ fail 1\n\
                    ℹ cancelled 0\nℹ skipped 0\nℹ todo 0\nℹ duration_ms 40.1\n\n✖ failing tests:\n\ntest at t.test.js:2:1\n✖ b (0.7ms)\n";
        assert_eq!(tuple(counts(spec)), (3, 2, 1, 0, 0, "tap"));
    }

    #[test]
    fn tape_summary() {
        let tape = "TAP version 13\n# adds\nok 1 should be equal\nnot ok 2 should be equal\n\n1..2\n# tests  2\n# pass  1\n# fail  1\n";
        assert_eq!(tuple(counts(tape)), (2, 1, 1, 0, 0, "tap"));
    }

    #[test]
    fn tap_lines_without_a_summary() {
        let tap = "1..5\nok 1 - first\nnot ok 2 - second\n  ---\n  ...\nok 3 - third # skip no network\n\
                   not ok 4 - fourth # TODO later\n    ok 1 - a subtest\nok 5 - fifth\n";
        assert_eq!(tuple(counts(tap)), (5, 2, 1, 0, 2, "tap"));
        let bailed = "1..4\nok 1 - first\nnot ok 2 - second\nBail out! database gone\n";
        assert_eq!(tuple(counts(bailed)), (4, 1, 1, 2, 0, "tap"));
        let skipped = "1..0 # SKIP no tests on this platform\n";
        assert_eq!(tuple(counts(skipped)), (0, 0, 0, 0, 0, "tap"));
        // Without a plan, `ok` lines are not enough.
        assert_eq!(counts_from_output("ok 1 - looks like TAP\n"), None);
    }

    #[test]
    fn truncation_marker_is_ignored() {
        let head = "============================= test session starts ==============================\n\
                    collected 300 items\n\ntest_a.py ......";
        let tail = "......\n=== 299 passed, 1 failed in 2.50s ===\n";
        let output = format!("{head}\n[… 48213 bytes omitted …]\n{tail}");
        assert_eq!(tuple(counts(&output)), (300, 299, 1, 0, 0, "pytest"));
        // A marker in the middle of a line: the broken summary is not read.
        let broken = "=== 2 passed in 0.1s ===\n=== 3 pass[… 12 bytes omitted …]ed in 0.1s ===\n";
        assert_eq!(tuple(counts(broken)), (2, 2, 0, 0, 0, "pytest"));
        // The marker's own number is not a count.
        assert_eq!(counts_from_output("[… 1024 bytes omitted …]\n"), None);
    }

    #[test]
    fn unrelated_output_has_no_counts() {
        for output in [
            "",
            "Hello Earthling\n",
            "Traceback (most recent call last):\nModuleNotFoundError: No module named 'pytest'\n",
            "error[E0425]: cannot find value `x` in this scope\nerror: could not compile `calc`\n",
            "copied 3 files in 2s\n",
        ] {
            assert_eq!(counts_from_output(output), None, "{output:?}");
        }
    }

    #[test]
    fn windows_line_endings() {
        let output = "Ran 2 tests in 0.001s\r\n\r\nOK\r\n";
        assert_eq!(tuple(counts(output)), (2, 2, 0, 0, 0, "unittest"));
    }

    fn junit(xml: &str) -> TestCounts {
        counts_from_junit(xml).unwrap_or_else(|e| panic!("{e}: {xml}"))
    }

    /// Written by `pytest --junitxml` (pytest 8).
    const PYTEST_JUNIT: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="6" time="0.052" timestamp="2026-01-01T10:00:00.000000+00:00" hostname="box"><testcase classname="test_app" name="test_ok" time="0.001" /><testcase classname="test_app" name="test_add" time="0.001"><failure message="assert 3 == 4">def test_add():
&gt;       assert add(1, 2) == 4
E       assert 3 == 4</failure></testcase><testcase classname="test_app" name="test_db" time="0.000"><error message="failed on setup with &quot;RuntimeError: no database&quot;">RuntimeError: no database</error></testcase><testcase classname="test_app" name="test_skip" time="0.000"><skipped type="pytest.skip" message="no">/workspace/test_app.py:9: no</skipped></testcase><testcase classname="test_app" name="test_xfail" time="0.000"><skipped type="pytest.xfail" message="" /></testcase><testcase classname="test_app" name="test_two" time="0.001" /></testsuite></testsuites>"#;

    #[test]
    fn junit_from_pytest() {
        assert_eq!(tuple(junit(PYTEST_JUNIT)), (6, 2, 1, 1, 2, "junit"));
    }

    #[test]
    fn junit_sums_suites() {
        let xml = r#"<testsuites tests="9" failures="1">
  <testsuite name="a" tests="4" failures="1" errors="0" skipped="1"/>
  <testsuite name="b" tests="5" failures="0" errors="2" skipped="0">
    <testcase name="x"/>
  </testsuite>
</testsuites>"#;
        assert_eq!(tuple(junit(xml)), (9, 5, 1, 2, 1, "junit"));
    }

    #[test]
    fn junit_single_suite_without_counts() {
        let xml = r#"<?xml version="1.0"?>
<!-- written by hand -->
<testsuite name="calc">
  <testcase name="a"/>
  <testcase name="b"><failure>boom</failure></testcase>
  <testcase name="c"><error message="x"/></testcase>
  <testcase name="d"><skipped/></testcase>
  <testcase name="e"><system-out>ok</system-out></testcase>
</testsuite>"#;
        assert_eq!(tuple(junit(xml)), (5, 2, 1, 1, 1, "junit"));
        // `tests` given, the rest counted.
        let partial = r#"<testsuite tests="3"><testcase/><testcase><failure/></testcase><testcase/></testsuite>"#;
        assert_eq!(tuple(junit(partial)), (3, 2, 1, 0, 0, "junit"));
    }

    #[test]
    fn junit_nested_suites_count_once() {
        // PHPUnit nests suites and puts the totals on the outer one.
        let xml = r#"<testsuites><testsuite name="all" tests="3" failures="1" errors="0" skipped="0">
  <testsuite name="CalcTest" tests="3" failures="1" errors="0" skipped="0">
    <testcase name="a"/><testcase name="b"><failure/></testcase><testcase name="c"/>
  </testsuite>
</testsuite></testsuites>"#;
        assert_eq!(tuple(junit(xml)), (3, 2, 1, 0, 0, "junit"));
    }

    #[test]
    fn junit_empty_reports() {
        assert_eq!(tuple(junit("<testsuites/>")), (0, 0, 0, 0, 0, "junit"));
        assert_eq!(
            tuple(junit(r#"<testsuites tests="2" failures="1"></testsuites>"#)),
            (2, 1, 1, 0, 0, "junit")
        );
    }

    #[test]
    fn junit_errors() {
        for (xml, expected) in [
            ("", "no root element"),
            ("just text", "no root element"),
            ("<testsuite><testcase>", "ends inside <testcase>"),
            ("<testsuite></testcase>", "malformed junit xml"),
            ("<testsuite tests=\"4></testsuite>", "malformed junit xml"),
            ("<html><body/></html>", "the root element is <html>"),
            ("<testsuite tests=\"many\"/>", "tests is \"many\""),
            ("<testsuite/><testsuite/>", "more than one root element"),
        ] {
            let error = counts_from_junit(xml)
                .err()
                .unwrap_or_else(|| panic!("{xml:?} was accepted"));
            assert!(error.contains(expected), "{xml:?}: {error}");
            assert!(!error.ends_with('.'), "{error}");
            assert!(
                error.starts_with(|c: char| c.is_lowercase()),
                "{error} should start lowercase"
            );
        }
    }
}
