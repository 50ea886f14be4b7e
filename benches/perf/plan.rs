//! What a harness invocation measures, and how the results are written and drawn.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::svg::{Chart, Series};

/// The simulated model's answer time in B2.
pub(crate) const B2_LATENCY: Duration = Duration::from_millis(500);

/// Messages each service of B3 handles at once: over a broker a service holds a message
/// until the broker has acknowledged what it produced, so it needs many more in flight than
/// in memory to keep the broker busy (the B3 sweep shows how many).
const B3_CONCURRENCY: u64 = 1_024;

/// Every measurement, by name.
const ALL: [&str; 5] = ["b1", "b2", "b3", "b4", "b5"];

/// One child process: a measurement and its arguments.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// `b1` … `b5`.
    pub(crate) bench: &'static str,
    /// The child's arguments, the measurement first.
    pub(crate) args: Vec<String>,
    /// Whether this run is the measurement's headline (the others make its plot).
    pub(crate) headline: bool,
}

impl Run {
    fn new(bench: &'static str, numbers: &[u64], headline: bool) -> Self {
        let mut args = vec![bench.to_owned()];
        args.extend(numbers.iter().map(u64::to_string));
        Self {
            bench,
            args,
            headline,
        }
    }

    /// `b1 10000 64`.
    pub(crate) fn describe(&self) -> String {
        self.args.join(" ")
    }

    fn number(&self, i: usize) -> f64 {
        self.args
            .get(i)
            .and_then(|a| a.parse::<f64>().ok())
            .unwrap_or(0.0)
    }
}

/// A run and what it measured.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    /// The run.
    pub(crate) run: Run,
    /// Its result object.
    pub(crate) value: Value,
}

/// The runs of one invocation and where their results go.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// `--quick`.
    pub(crate) quick: bool,
    /// `--out DIR`.
    pub(crate) out: PathBuf,
    /// In order.
    pub(crate) runs: Vec<Run>,
}

impl Plan {
    /// `[--quick] [--out DIR] [b1 … b5]` (none named: all).
    pub(crate) fn from_args(args: &[String]) -> Result<Self, String> {
        let mut quick = false;
        let mut out = None;
        let mut chosen = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--out" => out = Some(PathBuf::from(args.next().ok_or("--out needs a directory")?)),
                name => match ALL.iter().find(|b| **b == name) {
                    Some(bench) => chosen.push(*bench),
                    None => {
                        return Err(format!(
                            "unknown argument {name:?}; usage: perf [--quick] [--out DIR] [b1 b2 b3 b4 b5]"
                        ));
                    }
                },
            }
        }
        if chosen.is_empty() {
            chosen = ALL.to_vec();
        }
        let runs = chosen
            .into_iter()
            .flat_map(|bench| runs_of(bench, quick))
            .collect();
        Ok(Self {
            quick,
            out: out.unwrap_or_else(|| default_out(quick)),
            runs,
        })
    }
}

/// Where results go by default: the docs for a full run, the build directory for a quick one.
fn default_out(quick: bool) -> PathBuf {
    PathBuf::from(if quick {
        "target/perf-quick"
    } else {
        "docs/perf"
    })
}

/// The runs of one measurement: the headline, then the points of its plot.
fn runs_of(bench: &'static str, quick: bool) -> Vec<Run> {
    let size = |full: u64, fast: u64| if quick { fast } else { full };
    // The headline run, then one run of `tasks` tasks per concurrency of the plot.
    let swept = |headline: [u64; 2], tasks: u64, full: &[u64], fast: &[u64]| {
        let concurrencies = if quick { fast } else { full };
        std::iter::once(Run::new(bench, &headline, true))
            .chain(
                concurrencies
                    .iter()
                    .map(|concurrency| Run::new(bench, &[tasks, *concurrency], false)),
            )
            .collect()
    };
    match bench {
        "b1" => swept(
            [size(10_000, 2_000), 64],
            size(2_000, 500),
            &[1, 4, 16, 64, 256],
            &[4, 64],
        ),
        "b2" => swept(
            [size(10_000, 2_000), 1_000],
            size(2_000, 1_000),
            &[100, 250, 500, 1_000],
            &[250, 500],
        ),
        "b3" => swept(
            [size(5_000, 1_000), B3_CONCURRENCY],
            size(2_000, 500),
            &[64, 256, 1_024, 2_048],
            &[64, 1_024],
        ),
        "b4" => vec![Run::new("b4", &[size(120, 30), 600], true)],
        _ => vec![Run::new("b5", &[size(5, 2)], true)],
    }
}

/// The ideal wall time of B2: four steps of one model call each, `concurrency` at once.
pub(crate) fn b2_ideal_seconds(tasks: f64, concurrency: f64) -> f64 {
    4.0 * B2_LATENCY.as_secs_f64() * tasks / concurrency.max(1.0)
}

/// Writes `results.json`, the plots and `summary.md` to the plan's directory, and prints
/// the summary.
pub(crate) fn report(plan: &Plan, results: &[Measured]) -> Result<(), String> {
    let write = |name: &str, text: &str| {
        let path = plan.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let machine = machine();
    // The latest run of every measurement: what this invocation did not measure is kept
    // from the file as it was.
    let measured_now: Vec<&str> = results.iter().map(|m| m.run.bench).collect();
    let mut all: Vec<Measured> = earlier_results(&plan.out.join("results.json"))
        .into_iter()
        .filter(|m| !measured_now.contains(&m.run.bench))
        .collect();
    all.extend(results.iter().cloned());
    all.sort_by_key(|m| ALL.iter().position(|b| *b == m.run.bench));
    let entries: Vec<Value> = all
        .iter()
        .map(|m| json!({ "run": m.run.describe(), "headline": m.run.headline, "result": m.value }))
        .collect();
    let document = json!({ "quick": plan.quick, "machine": machine, "results": entries });
    write(
        "results.json",
        &serde_json::to_string_pretty(&document).unwrap_or_default(),
    )?;
    let sweep = |bench: &str| -> Vec<&Measured> {
        results
            .iter()
            .filter(|m| m.run.bench == bench && !m.run.headline)
            .collect()
    };
    let throughput = |bench: &str, title: &str, file: &str| -> Result<(), String> {
        let runs = sweep(bench);
        if runs.is_empty() {
            return Ok(());
        }
        let chart = Chart {
            title: title.into(),
            x_label: "messages handled at once per service".into(),
            y_label: "tasks per second".into(),
            log_x: true,
            series: vec![Series {
                label: "tasks/s".into(),
                points: runs
                    .iter()
                    .map(|m| {
                        (
                            m.run.number(2),
                            m.value["tasks_per_s"].as_f64().unwrap_or(0.0),
                        )
                    })
                    .collect(),
                dashed: false,
            }],
        };
        write(file, &chart.to_svg())
    };
    throughput(
        "b1",
        "B1: embedded throughput against concurrency",
        "b1-concurrency.svg",
    )?;
    throughput(
        "b3",
        "B3: throughput over the broker against concurrency",
        "b3-concurrency.svg",
    )?;
    let b2 = sweep("b2");
    if !b2.is_empty() {
        let point = |m: &&Measured, value: f64| (m.run.number(2), value);
        let chart = Chart {
            title: format!(
                "B2: wall time against the ideal ({} tasks, 500 ms model)",
                b2[0].run.number(1)
            ),
            x_label: "concurrent model calls".into(),
            y_label: "seconds".into(),
            log_x: true,
            series: vec![
                Series {
                    label: "measured".into(),
                    points: b2
                        .iter()
                        .map(|m| point(m, m.value["wall_s"].as_f64().unwrap_or(0.0)))
                        .collect(),
                    dashed: false,
                },
                Series {
                    label: "ideal".into(),
                    points: b2
                        .iter()
                        .map(|m| point(m, b2_ideal_seconds(m.run.number(1), m.run.number(2))))
                        .collect(),
                    dashed: true,
                },
            ],
        };
        write("b2-ideal.svg", &chart.to_svg())?;
    }
    let summary = summary(&all, &machine);
    write("summary.md", &summary)?;
    println!("{summary}");
    Ok(())
}

/// The measurements of an earlier `results.json`; none when it is missing or unreadable.
fn earlier_results(path: &std::path::Path) -> Vec<Measured> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(document) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    let entries = document["results"].as_array().cloned().unwrap_or_default();
    entries
        .into_iter()
        .filter_map(|entry| {
            let args: Vec<String> = entry["run"]
                .as_str()?
                .split(' ')
                .map(str::to_owned)
                .collect();
            let bench = *ALL
                .iter()
                .find(|b| Some(**b) == args.first().map(String::as_str))?;
            Some(Measured {
                run: Run {
                    bench,
                    args,
                    headline: entry["headline"].as_bool()?,
                },
                value: entry["result"].clone(),
            })
        })
        .collect()
}

/// The headline of each measurement as a markdown table.
fn summary(results: &[Measured], machine: &str) -> String {
    let mut text = format!("Machine: {machine}\n\n| run | result |\n|---|---|\n");
    for m in results.iter().filter(|m| m.run.headline) {
        let v = &m.value;
        let f = |key: &str| v[key].as_f64().unwrap_or(f64::NAN);
        let line = match m.run.bench {
            "b1" => format!(
                "{:.0} tasks/s, {:.0} steps/s, task latency p50 {:.0} ms / p99 {:.0} ms, peak RSS {:.0} MB",
                f("tasks_per_s"),
                f("steps_per_s"),
                f("latency_p50_ms"),
                f("latency_p99_ms"),
                f("peak_rss_mb")
            ),
            "b2" => {
                let ideal = b2_ideal_seconds(m.run.number(1), m.run.number(2));
                format!(
                    "{:.1} s against the ideal {ideal:.1} s ({:+.1}%), peak RSS {:.0} MB",
                    f("wall_s"),
                    (f("wall_s") / ideal - 1.0) * 100.0,
                    f("peak_rss_mb")
                )
            }
            "b3" => format!(
                "{:.0} tasks/s, step round trip (two hops) p50 {:.0} ms / p99 {:.0} ms",
                f("tasks_per_s"),
                f("step_round_trip_p50_ms"),
                f("step_round_trip_p99_ms")
            ),
            "b4" => format!(
                "{:.1} requests/min of {:.0} allowed ({:.1}%), {} answered 429",
                f("achieved_per_minute"),
                f("limit_per_minute"),
                f("achieved_per_minute") / f("limit_per_minute") * 100.0,
                v["too_many_requests"]
            ),
            _ => format!(
                "ready in {:.0} ms (median), idle RSS {:.1} MB, binary {:.1} MB",
                f("ready_ms_median"),
                f("idle_rss_mb_median"),
                f("binary_mb")
            ),
        };
        let _ = writeln!(text, "| {} | {line} |", m.run.describe());
    }
    text
}

/// The CPU model and count, for the record.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} × {model}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ideal_of_the_issue() {
        assert_eq!(b2_ideal_seconds(10_000.0, 1_000.0), 20.0);
    }

    #[test]
    fn arguments_choose_the_runs() -> Result<(), String> {
        let plan = Plan::from_args(&["--quick".into(), "b5".into()])?;
        assert_eq!(plan.out, PathBuf::from("target/perf-quick"));
        assert!(plan.quick);
        assert_eq!(plan.runs.len(), 1);
        assert_eq!(plan.runs[0].describe(), "b5 2");
        let all = Plan::from_args(&[])?;
        assert_eq!(all.runs.iter().filter(|r| r.headline).count(), 5);
        assert!(Plan::from_args(&["b9".into()]).is_err());
        Ok(())
    }

    #[test]
    fn a_partial_run_keeps_the_other_measurements() -> Result<(), String> {
        let out = tempfile::tempdir().map_err(|e| e.to_string())?;
        let plan = |args: &[&str]| -> Result<Plan, String> {
            let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            args.extend(["--out".to_owned(), out.path().display().to_string()]);
            Plan::from_args(&args)
        };
        let measured = |plan: &Plan, value: f64| -> Vec<Measured> {
            plan.runs
                .iter()
                .map(|run| Measured {
                    run: run.clone(),
                    value: json!({ "ready_ms_median": value, "tasks_per_s": value }),
                })
                .collect()
        };
        let first = plan(&["--quick", "b5", "b1"])?;
        report(&first, &measured(&first, 1.0))?;
        let second = plan(&["--quick", "b5"])?;
        report(&second, &measured(&second, 2.0))?;
        let text =
            std::fs::read_to_string(out.path().join("results.json")).map_err(|e| e.to_string())?;
        let kept = earlier_results(&out.path().join("results.json"));
        assert_eq!(kept.len(), 4, "{text}");
        assert_eq!(kept[0].run.bench, "b1");
        assert_eq!(kept[0].value["tasks_per_s"], 1.0);
        assert_eq!(kept[3].run.describe(), "b5 2");
        assert_eq!(kept[3].value["ready_ms_median"], 2.0);
        assert!(out.path().join("b1-concurrency.svg").exists());
        Ok(())
    }
}
