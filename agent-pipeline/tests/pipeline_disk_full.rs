//! The disk under `DATA_DIR` runs full mid-run: a small tmpfs is the data directory and a
//! filler file takes all but a few KiB of it.
//!
//! What a user sees today: a task submitted then is dead-lettered by the planner with the
//! state database's "database or disk is full" as the reason, never reaches the state store,
//! and ends with an `error` event (reason `not_recorded`) that `Pipeline::wait` returns, also
//! when not one byte is left and `reports.jsonl` cannot be written (the event goes out on the
//! bus); a redelivered task that was recorded before gets no second final event; no artifact
//! file is torn; once space returns, new tasks run to `done` and re-driving the dead letter
//! runs the task to `done`.
//!
//! Mounting needs root: without it the test prints SKIPPED and passes, except under
//! `CI=true`, where that is a failure.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use agent_pipeline::bus::FollowFrom;
use agent_pipeline::machine::REASON_NOT_RECORDED;
use agent_pipeline::wire::{
    ControlAction, DeadLetter, NewTask, ReportEvent, ReportStatus, TaskControl,
};
use agent_pipeline::{Pipeline, TaskId};
use common::{PATIENCE, TestResult, builder, events_until, finish, story};

const HELLO: &str = "Write a tiny Python program that prints 'Hello Earthling'";

/// How much space the filler leaves: the state store opens and reads, its writes fail.
const ROOM: u64 = 8 * 1024;

/// A tmpfs mounted at a directory, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`; `None` (SKIPPED) when not permitted outside CI.
    fn mount(test: &str, dir: &Path, size: &str) -> Option<Self> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Self(dir.to_path_buf())),
            other => {
                let why = match other {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    Err(error) => error.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "could not mount a tmpfs, which CI requires: {why}"
                );
                eprintln!("SKIPPED {test}: could not mount a tmpfs: {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a service that outlived a failed test may still hold a file open.
        match Command::new("umount").arg("-l").arg(&self.0).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("could not unmount {:?}: {other:?}", self.0),
        }
    }
}

/// Writes a filler file in `dir` until the disk is full, then gives back `room` bytes.
fn fill(dir: &Path, room: u64) -> std::io::Result<PathBuf> {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0u8; 64 * 1024];
    let full = loop {
        if let Err(error) = file.write_all(&chunk) {
            break error;
        }
    };
    assert_eq!(full.raw_os_error(), Some(28), "not ENOSPC: {full}");
    let len = file.metadata()?.len();
    file.set_len(len.saturating_sub(room))?;
    Ok(path)
}

/// The dead letters of the task topic, once there is one for each of `tasks`. Others (the
/// mirrors' own, when a file cannot be written) are skipped.
async fn task_dead_letters(
    pipeline: &Pipeline,
    tasks: &[TaskId],
) -> Result<Vec<DeadLetter>, Box<dyn std::error::Error>> {
    let group = format!("test-{}", TaskId::new());
    let subscription = pipeline
        .bus()
        .subscribe(&pipeline.topics().dlq, &group)
        .await?;
    let wanted: Vec<String> = tasks.iter().map(ToString::to_string).collect();
    let mut letters: Vec<DeadLetter> = Vec::new();
    while !wanted
        .iter()
        .all(|t| letters.iter().any(|l| l.task_id.as_ref() == Some(t)))
    {
        let delivery = tokio::time::timeout(PATIENCE, subscription.next()).await??;
        subscription.ack(delivery.receipt).await?;
        let letter: DeadLetter = serde_json::from_slice(&delivery.payload)?;
        if letter.source_topic == pipeline.topics().tasks {
            letters.push(letter);
        }
    }
    Ok(letters)
}

/// The first dead letter for which `wanted` holds.
async fn first_dead_letter(
    pipeline: &Pipeline,
    wanted: impl Fn(&DeadLetter) -> bool,
) -> Result<DeadLetter, Box<dyn std::error::Error>> {
    let letters = pipeline
        .bus()
        .follow(&pipeline.topics().dlq, FollowFrom::Oldest)
        .await?;
    loop {
        let delivery = tokio::time::timeout(PATIENCE, letters.next())
            .await
            .map_err(|_| "no such dead letter")??;
        letters.ack(delivery.receipt).await?;
        let letter: DeadLetter = serde_json::from_slice(&delivery.payload)?;
        if wanted(&letter) {
            return Ok(letter);
        }
    }
}

/// Appends one JSON line to `path` so that its length is a multiple of the page size: on a
/// tmpfs without a free page, the next append then fails (a shorter one could otherwise fit
/// in the file's last page).
fn pad_to_page(path: &Path) -> TestResult {
    let output = Command::new("getconf").arg("PAGESIZE").output()?;
    let page: u64 = String::from_utf8(output.stdout)?.trim().parse()?;
    let len = std::fs::metadata(path)?.len();
    let bare = br#"{"pad":""}"#.len() as u64 + 1;
    let pad = (page - (len + bare) % page) % page;
    let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(usize::try_from(pad)?));
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())?;
    let len = std::fs::metadata(path)?.len();
    assert_eq!(len % page, 0, "another line came meanwhile");
    Ok(())
}

/// Waits for the `error` event of a task the planner could not record, checks it and gives
/// it.
async fn ends_not_recorded(
    pipeline: &Pipeline,
    task_id: TaskId,
) -> Result<ReportEvent, Box<dyn std::error::Error>> {
    let last = finish(pipeline, task_id)
        .await
        .map_err(|e| format!("{task_id} did not end: {e}"))?;
    assert_eq!(last.status, ReportStatus::Error, "{last:?}");
    assert_eq!(
        last.reason.as_deref(),
        Some(REASON_NOT_RECORDED),
        "{last:?}"
    );
    assert!(
        last.summary.contains("database or disk is full"),
        "{}",
        last.summary
    );
    Ok(last)
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Every `*.json` under `dir` parses as JSON.
fn assert_no_torn_json(dir: &Path) -> TestResult {
    let jsons: Vec<_> = files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert!(!jsons.is_empty(), "no artifact at all under {dir:?}");
    for path in jsons {
        let text = std::fs::read(&path)?;
        if let Err(error) = serde_json::from_slice::<serde_json::Value>(&text) {
            panic!(
                "{path:?} is torn ({error}): {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_dead_letters_tasks_tears_nothing_and_recovers() -> TestResult {
    let test = "a_full_disk_dead_letters_tasks_tears_nothing_and_recovers";
    let temp = tempfile::tempdir()?;
    let data = temp.path().join("data");
    std::fs::create_dir(&data)?;
    let Some(_tmpfs) = Tmpfs::mount(test, &data, "16m") else {
        return Ok(());
    };
    let pipeline = builder(&temp).execute_code(false).build().await?;
    let running = pipeline.start().await?;
    // One task first, so that the state database and the logs have their working size.
    let warm = NewTask::new(HELLO);
    let warm_id = pipeline.enqueue(warm.clone()).await?;
    assert_eq!(finish(&pipeline, warm_id).await?.status, ReportStatus::Done);

    let filler = fill(&data, ROOM)?;
    // The finished task's message again (a redelivery), then a cancellation of it, which is
    // refused and reported `dlq`: one key's messages are handled in order, so an event of the
    // redelivery would come before that report.
    for message in [
        serde_json::to_vec(&warm)?,
        serde_json::to_vec(&TaskControl::new(ControlAction::Cancel, warm_id))?,
    ] {
        pipeline
            .publish_raw_task_message(&warm_id.to_string(), message)
            .await?;
    }
    let failed = vec![pipeline.submit(HELLO).await?, pipeline.submit(HELLO).await?];
    // No hang, no panic: both end in `error`, and are dead-lettered, saying the disk is full.
    for task_id in &failed {
        ends_not_recorded(&pipeline, *task_id).await?;
    }
    let warm_events = events_until(&pipeline, warm_id, |e| {
        e.status == ReportStatus::Dlq && e.summary.contains("cancel refused")
    })
    .await?;
    let finals: Vec<_> = warm_events.iter().filter(|e| e.status.is_final()).collect();
    assert_eq!(finals.len(), 1, "a second final event: {finals:?}");
    let letters: Vec<_> = task_dead_letters(&pipeline, &failed)
        .await?
        .into_iter()
        .filter(|l| failed.iter().any(|t| l.task_id == Some(t.to_string())))
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter.source_topic, pipeline.topics().tasks);
        assert!(
            letter.reason.contains("database or disk is full"),
            "{}",
            letter.reason
        );
    }
    for task_id in &failed {
        assert!(
            pipeline.state().task(*task_id).await?.is_none(),
            "{task_id} was recorded although its planning failed"
        );
    }
    assert_no_torn_json(&data)?;

    // Space returns.
    std::fs::remove_file(&filler)?;
    let fresh = pipeline.submit(HELLO).await?;
    let last = finish(&pipeline, fresh).await?;
    assert_eq!(last.status, ReportStatus::Done, "{last:?}");
    let log = pipeline.report_log().clone();
    common::eventually("the task's final event in reports.jsonl", || {
        let log = log.clone();
        async move {
            log.read_all().await.is_ok_and(|events| {
                events
                    .iter()
                    .any(|e| e.task_id == fresh && e.status.is_final())
            })
        }
    })
    .await?;
    let events: Vec<_> = log
        .read_all()
        .await?
        .into_iter()
        .filter(|e| e.task_id == fresh)
        .collect();
    assert_eq!(
        story(&events),
        [
            "received",
            "stage_done design@v1",
            "stage_done implement@v1",
            "stage_done test@v1",
            "stage_done review@v1",
            "gates",
            "done review@v1"
        ],
        "every event of the task after recovery is readable in reports.jsonl"
    );

    // Re-driving a dead letter runs its task.
    let redriven = &letters[0];
    pipeline.redrive(redriven).await?;
    let task_id = redriven.task_id.as_deref().unwrap_or_default().parse()?;
    // Its events go on after the `error` that ended it when it could not be recorded.
    let events = events_until(&pipeline, task_id, |e| {
        e.status.is_final() && e.status != ReportStatus::Error
    })
    .await?;
    let last = events.last().ok_or("no event")?;
    assert_eq!(last.status, ReportStatus::Done, "{events:?}");
    assert_no_torn_json(&data)?;
    let text = std::fs::read_to_string(data.join("reports.jsonl"))?;
    let unreadable: Vec<_> = text
        .lines()
        .filter(|line| serde_json::from_str::<serde_json::Value>(line).is_err())
        .collect();
    assert!(
        unreadable.is_empty(),
        "unreadable lines in reports.jsonl: {unreadable:?}"
    );

    tokio::time::timeout(PATIENCE, running.shutdown())
        .await
        .map_err(|_| "the pipeline did not shut down after the disk was full")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_not_one_byte_left_a_new_task_still_ends_in_error_on_the_bus() -> TestResult {
    let test = "with_not_one_byte_left_a_new_task_still_ends_in_error_on_the_bus";
    let temp = tempfile::tempdir()?;
    let data = temp.path().join("data");
    std::fs::create_dir(&data)?;
    let Some(_tmpfs) = Tmpfs::mount(test, &data, "16m") else {
        return Ok(());
    };
    let pipeline = builder(&temp).execute_code(false).build().await?;
    let running = pipeline.start().await?;
    let warm = pipeline.submit(HELLO).await?;
    let last = finish(&pipeline, warm).await?;
    assert_eq!(last.status, ReportStatus::Done);
    let log = pipeline.report_log().clone();
    common::eventually("the last event in reports.jsonl", || {
        let (log, last) = (log.clone(), last.clone());
        async move {
            log.read_all()
                .await
                .is_ok_and(|events| events.contains(&last))
        }
    })
    .await?;

    // Not one byte left, and `reports.jsonl` ends on a page: it cannot take the next event.
    pad_to_page(&data.join("reports.jsonl"))?;
    let filler = fill(&data, 0)?;
    let bare = pipeline.submit(HELLO).await?;
    ends_not_recorded(&pipeline, bare).await?;
    // The event reached `wait` over the bus although the mirror could not write it.
    let unwritten = first_dead_letter(&pipeline, |l| {
        l.source_topic == pipeline.topics().reports && l.task_id == Some(bare.to_string())
    })
    .await?;
    assert!(
        unwritten.reason.contains("No space left on device"),
        "the report mirror failed otherwise: {}",
        unwritten.reason
    );
    assert!(pipeline.state().task(bare).await?.is_none());

    std::fs::remove_file(&filler)?;
    tokio::time::timeout(PATIENCE, running.shutdown())
        .await
        .map_err(|_| "the pipeline did not shut down after the disk was full")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_line_cut_short_by_a_full_disk_does_not_swallow_the_next() -> TestResult {
    let test = "a_report_line_cut_short_by_a_full_disk_does_not_swallow_the_next";
    let temp = tempfile::tempdir()?;
    let data = temp.path().join("data");
    std::fs::create_dir(&data)?;
    let Some(_tmpfs) = Tmpfs::mount(test, &data, "1m") else {
        return Ok(());
    };
    let log = agent_pipeline::store::ReportLog::in_dir(&data);
    log.append_raw(br#"{"n":1}"#).await?;
    let filler = fill(&data, ROOM)?;
    // Larger than the room left: the write is cut short, the append fails with ENOSPC.
    let big = format!(r#"{{"n":2,"pad":"{}"}}"#, "x".repeat(64 * 1024));
    let error = log
        .append_raw(big.as_bytes())
        .await
        .err()
        .ok_or("an append larger than the free space succeeded")?;
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );

    std::fs::remove_file(&filler)?;
    log.append_raw(br#"{"n":3}"#).await?;
    let lines: Vec<serde_json::Value> = log.read_all_as().await?;
    assert_eq!(
        lines,
        [serde_json::json!({"n": 1}), serde_json::json!({"n": 3})],
        "the line after the full disk is readable"
    );
    Ok(())
}
