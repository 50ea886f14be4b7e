use std::path::Path;
use std::time::{Duration, SystemTime};

use super::record::Record;
use super::{JOURNAL_DIR, Journal, recover};
use crate::ids::TaskId;
use crate::store::TaskFile;
use crate::store::{ArtifactStore, FileArtifactStore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn journals(root: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(root.join(JOURNAL_DIR))
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn task(task_id: TaskId, prompt: &str) -> TaskFile {
    TaskFile {
        task_id,
        prompt: prompt.to_owned(),
        created_at: chrono::Utc::now(),
        budget: None,
        require_approval: false,
        repository: None,
    }
}

fn write_journal(root: &Path, records: &[Record]) -> std::io::Result<std::path::PathBuf> {
    let dir = root.join(JOURNAL_DIR);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("crashed.log");
    let mut bytes = Vec::new();
    for record in records {
        record.encode_into(&mut bytes);
    }
    std::fs::write(&path, bytes)?;
    Ok(path)
}

fn record(path: &str, data: &str, written_at: SystemTime) -> Record {
    Record {
        path: path.to_owned(),
        data: data.as_bytes().to_vec(),
        written_at,
    }
}

#[tokio::test]
async fn writes_stay_journaled_until_a_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = FileArtifactStore::new(dir.path());
    let task_id = TaskId::new();
    let path = store.write_task(&task(task_id, "journaled")).await?;
    assert!(std::fs::read_to_string(&path)?.contains("journaled"));
    let logs = journals(dir.path());
    assert_eq!(logs.len(), 1, "{logs:?}");
    let (records, torn) = Record::decode_all(&std::fs::read(&logs[0])?);
    assert!(!torn);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].path, format!("{task_id}/task.json"));
    assert_eq!(records[0].data, std::fs::read(&path)?);

    store.checkpoint().await?;
    assert!(
        journals(dir.path()).is_empty(),
        "retired after the checkpoint"
    );
    assert!(std::fs::read_to_string(&path)?.contains("journaled"));
    Ok(())
}

#[tokio::test]
async fn full_journals_are_retired_and_nothing_is_lost() -> TestResult {
    let dir = tempfile::tempdir()?;
    let journal = Journal::start_with(dir.path().to_path_buf(), 1);
    let task_id = TaskId::new();
    let root = dir.path().to_path_buf();
    for n in 0..20 {
        let path = root
            .join(task_id.to_string())
            .join(format!("record{n}.json"));
        journal
            .run(Box::new(move |files| {
                files.prepare_dir(&task_id.to_string())?;
                files.write(&path, format!("{{\"n\": {n}}}").into_bytes())
            }))
            .await?;
    }
    journal.checkpoint().await?;
    assert!(journals(dir.path()).is_empty());
    for n in 0..20 {
        let text = std::fs::read_to_string(
            root.join(task_id.to_string())
                .join(format!("record{n}.json")),
        )?;
        assert_eq!(text, format!("{{\"n\": {n}}}"));
    }
    Ok(())
}

#[test]
fn recovery_restores_what_a_crash_lost_and_keeps_later_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let task = root.join("t");
    std::fs::create_dir_all(&task)?;
    let before = SystemTime::now() - Duration::from_secs(3600);
    // Written after the journaled write: another process replaced it since.
    std::fs::write(task.join("newer.json"), "{\"by\": \"another process\"}")?;
    // What the crash left: an older version, a file that is empty.
    std::fs::write(task.join("stale.json"), "{\"version\": 1}")?;
    let stale_time = SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(task.join("stale.json"))?
        .set_modified(stale_time)?;
    std::fs::write(task.join("empty.json"), "")?;
    let at = SystemTime::now() - Duration::from_secs(30);
    let journal = write_journal(
        root,
        &[
            record("t/missing.json", "{\"old\": true}", at),
            record("t/missing.json", "{\"latest\": true}", at),
            record("t/stale.json", "{\"version\": 2}", at),
            record("t/empty.json", "{\"whole\": true}", at),
            record("t/newer.json", "{\"by\": \"the crashed process\"}", before),
            record("u/in-a-new-directory.json", "{}", at),
        ],
    )?;
    assert_eq!(recover(root)?, 4);
    let read = |name: &str| std::fs::read_to_string(root.join(name));
    assert_eq!(read("t/missing.json")?, "{\"latest\": true}");
    assert_eq!(read("t/stale.json")?, "{\"version\": 2}");
    assert_eq!(read("t/empty.json")?, "{\"whole\": true}");
    assert_eq!(read("t/newer.json")?, "{\"by\": \"another process\"}");
    assert_eq!(read("u/in-a-new-directory.json")?, "{}");
    assert!(!journal.exists(), "a recovered journal is deleted");
    assert_eq!(recover(root)?, 0, "and not replayed twice");
    Ok(())
}

#[test]
fn a_journal_cannot_lead_outside_the_data_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root)?;
    write_journal(&root, &[record("../escaped.json", "{}", SystemTime::now())])?;
    assert!(recover(&root).is_err());
    assert!(!dir.path().join("escaped.json").exists());
    Ok(())
}

#[tokio::test]
async fn the_journal_of_a_running_process_is_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let running = FileArtifactStore::new(dir.path());
    let task_id = TaskId::new();
    running.write_task(&task(task_id, "still running")).await?;
    let restarted = FileArtifactStore::new(dir.path());
    assert_eq!(restarted.recover().await?, 0);
    assert_eq!(journals(dir.path()).len(), 1, "still held by its process");
    Ok(())
}
