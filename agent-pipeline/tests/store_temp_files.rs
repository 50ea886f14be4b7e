//! The temporary files that atomic writes of killed processes left in the data directory are
//! removed when a pipeline is built on it; those of writes that may still be under way, and
//! anything that is not such a file, are kept.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_pipeline::llm::OfflineLlm;
use agent_pipeline::{Pipeline, TaskId};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Writes `path` as a writer would have, last modified `age` ago.
fn left(path: &Path, age: Duration) -> TestResult {
    std::fs::write(path, b"{\"half\":")?;
    File::options()
        .write(true)
        .open(path)?
        .set_modified(SystemTime::now() - age)?;
    Ok(())
}

/// The id of a process that has ended: a child that ran and was waited for.
fn ended_pid() -> Result<u32, Box<dyn std::error::Error>> {
    let mut child = std::process::Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

#[tokio::test]
async fn a_new_pipeline_removes_the_temporary_files_stopped_writers_left() -> TestResult {
    let temp = tempfile::tempdir()?;
    let data = temp.path().join("data");
    let task_dir = data.join(TaskId::new().to_string());
    let workspace = task_dir.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let me = std::process::id();
    let dead = ended_pid()?;
    let minutes = |n: u64| Duration::from_secs(60 * n);

    // Left behind: by an ended process, after the grace; by any process, hours ago (its id
    // may name another process by now).
    let of_dead_writer = task_dir.join(format!(".design@v1.json.{dead}-3.tmp"));
    left(&of_dead_writer, minutes(2))?;
    let old = task_dir.join(format!(".task.json.{me}-1.tmp"));
    left(&old, minutes(120))?;
    let old_report_log = data.join(".reports.jsonl.1-9.tmp");
    left(&old_report_log, minutes(120))?;
    let gone = [&of_dead_writer, &old, &old_report_log];

    // Kept: a write of this (running) process, one of an ended process within the grace (its
    // writer may be one this machine cannot see), files that are not such temporary files,
    // and anything in a task's workspace, which is not walked.
    let under_way = task_dir.join(format!(".implement@v1.json.{me}-4.tmp"));
    left(&under_way, Duration::ZERO)?;
    let recent_dead = task_dir.join(format!(".review@v1.json.{dead}-5.tmp"));
    left(&recent_dead, Duration::from_secs(5))?;
    let not_ours = task_dir.join("notes.tmp");
    left(&not_ours, minutes(120))?;
    let in_workspace = workspace.join(format!(".hello.py.{dead}-1.tmp"));
    left(&in_workspace, minutes(120))?;
    let kept = [&under_way, &recent_dead, &not_ours, &in_workspace];

    let pipeline = Pipeline::builder()
        .data_dir(&data)
        .llm(Arc::new(OfflineLlm::new()))
        .build()
        .await?;

    for path in gone {
        assert!(!path.exists(), "{} is left", path.display());
    }
    for path in kept {
        assert!(path.exists(), "{} was removed", path.display());
    }
    drop(pipeline);
    Ok(())
}
