//! The code memory on a generated repository of a few hundred files: the chunk of the function
//! a question is about comes first, the context stays within its budget, the index of a commit
//! is reused, and an update replaces what changed.
#![cfg(feature = "memory")]

mod common;

use std::path::{Path, PathBuf};

use agent_pipeline::execution::ChangedFile;
use agent_pipeline::memory::{
    CodeMemory, ContextBuilder, IndexOutcome, MemoryError, MemoryOptions, estimate_tokens,
};
use common::TestResult;
use common::repo::{TARGET_FUNCTION, TARGET_PATH, generate};

const FILES: usize = 300;
const COMMIT: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// A generated repository and a data directory beside it.
struct Setup {
    temp: tempfile::TempDir,
}

impl Setup {
    fn new() -> std::io::Result<Self> {
        let temp = tempfile::tempdir()?;
        generate(&temp.path().join("repo"), FILES)?;
        std::fs::create_dir_all(temp.path().join("data"))?;
        Ok(Self { temp })
    }

    fn repo(&self) -> PathBuf {
        self.temp.path().join("repo")
    }

    fn data(&self) -> PathBuf {
        self.temp.path().join("data")
    }

    fn index_dir(&self) -> PathBuf {
        self.data().join("memory/example-repo").join(COMMIT)
    }

    async fn open(&self) -> Result<(CodeMemory, IndexOutcome), MemoryError> {
        CodeMemory::open(
            self.index_dir(),
            self.repo(),
            COMMIT,
            MemoryOptions::default(),
        )
        .await
    }
}

/// Every file under `root`, relative, sorted.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_chunk_of_the_function_a_question_is_about_comes_first() -> TestResult {
    let setup = Setup::new()?;
    let (memory, outcome) = setup.open().await?;
    let IndexOutcome::Built(stats) = outcome else {
        panic!("a first open must build, not {outcome:?}");
    };
    assert_eq!(stats.files, FILES + 1);
    assert!(stats.chunks > FILES * 3, "{stats:?}");

    for question in [
        "where is the invoice total computed",
        "compute invoice total",
        "computeInvoiceTotal",
        "InvoiceTotal",
    ] {
        let hits = memory.search(question, 10).await?;
        let first = hits.first().ok_or("no hits")?;
        assert_eq!(first.path, TARGET_PATH, "{question:?}: {hits:#?}");
        assert_eq!(first.symbols, [TARGET_FUNCTION], "{question:?}");
        assert!(first.text.starts_with("def compute_invoice_total("));
        // The line range is the function's, as a reviewer would look it up.
        assert_eq!((first.start_line, first.end_line), (9, 16), "{question:?}");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(first.lexical_score, Some(first.score));
        assert_eq!(first.vector_score, None);
    }

    // A question about another generated function finds that one.
    let hits = memory.search("render user header", 3).await?;
    assert_eq!(
        (hits[0].path.as_str(), hits[0].symbols.as_slice()),
        (
            "pkg0/module_0.py",
            ["render_user_header_0".to_owned()].as_slice()
        ),
        "{hits:#?}"
    );
    assert_eq!(memory.search("compute invoice total", 2).await?.len(), 2);
    assert!(memory.search("compute invoice total", 0).await?.is_empty());
    assert!(memory.search("?!", 5).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_context_never_exceeds_its_budget_and_drops_the_lowest_ranked_chunks_first()
-> TestResult {
    let setup = Setup::new()?;
    let (memory, _) = setup.open().await?;
    let hits = memory
        .search("where is the invoice total computed", 20)
        .await?;
    assert_eq!(hits.len(), 20);
    let task = "Add a discount to the invoice total. ".repeat(20);
    let design =
        "Change compute_invoice_total in billing/ledger.py — ünïcödé included. ".repeat(30);

    let mut budgets: Vec<u64> = (0..200).collect();
    budgets.extend((200..6_000).step_by(37));
    let mut seen_truncated = false;
    let mut seen_partial = false;
    for budget in budgets {
        let context = ContextBuilder::new(budget)
            .task(task.clone())
            .artifact("design", design.clone())
            .chunks(hits.clone())
            .build();
        // The crate's estimator and the rule it documents (bytes / 4, rounded up).
        assert!(estimate_tokens(&context.text) <= budget, "budget {budget}");
        assert!(
            context.text.len().div_ceil(4) as u64 <= budget,
            "budget {budget}"
        );
        assert_eq!(context.tokens, estimate_tokens(&context.text));

        // What was recorded is what is in the text, best first: the included chunks are
        // the head of the ranking, so the lowest-ranked ones were dropped first.
        let n = context.retrieved.len();
        assert_eq!(n + context.chunks_left_out, hits.len(), "budget {budget}");
        for (record, hit) in context.retrieved.iter().zip(&hits) {
            assert_eq!(
                (&record.path, record.start_line),
                (&hit.path, hit.start_line)
            );
            assert!(record.end_line <= hit.end_line);
            assert_eq!(record.truncated, record.end_line < hit.end_line);
            let heading = format!(
                "### {}:{}-{}\n",
                record.path, record.start_line, record.end_line
            );
            assert!(
                context.text.contains(&heading),
                "budget {budget}: {heading}"
            );
            seen_truncated |= record.truncated;
        }
        // Only the last included chunk may be cut.
        assert!(context.retrieved.iter().rev().skip(1).all(|r| !r.truncated));
        seen_partial |= n > 0 && n < hits.len();
        if budget >= 5_000 {
            assert_eq!(n, hits.len(), "budget {budget} holds everything");
            assert!(context.text.contains(&task) && context.text.contains(&design));
        }
    }
    assert!(seen_truncated && seen_partial);
    Ok(())
}

#[tokio::test]
async fn a_second_task_on_the_same_commit_reuses_the_index_without_reading_the_tree() -> TestResult
{
    let setup = Setup::new()?;
    let repo_before = listing(&setup.repo());
    let (first, outcome) = setup.open().await?;
    assert!(matches!(outcome, IndexOutcome::Built(_)));
    let stats = first.stats();
    drop(first);
    // Nothing was written into the work tree, and nothing outside the index directory.
    assert_eq!(listing(&setup.repo()), repo_before);
    let data_files = listing(&setup.data());
    let index_prefix = format!("memory/example-repo/{COMMIT}/index/");
    assert!(
        data_files.iter().all(|f| f.starts_with(&index_prefix)),
        "{data_files:?}"
    );
    let index_before: Vec<(String, u64)> = data_files
        .iter()
        .map(|f| {
            (
                f.clone(),
                std::fs::metadata(setup.data().join(f)).map_or(0, |m| m.len()),
            )
        })
        .collect();

    // Without the work tree, only a reused index can answer.
    std::fs::rename(setup.repo(), setup.temp.path().join("moved"))?;
    let (second, outcome) = setup.open().await?;
    assert_eq!(outcome, IndexOutcome::Reused(stats));
    let hits = second.search("compute invoice total", 1).await?;
    assert_eq!(hits[0].path, TARGET_PATH);
    let index_after: Vec<(String, u64)> = listing(&setup.data())
        .iter()
        .map(|f| {
            (
                f.clone(),
                std::fs::metadata(setup.data().join(f)).map_or(0, |m| m.len()),
            )
        })
        .collect();
    assert_eq!(index_after, index_before);

    // The index of one commit is not the index of another.
    let other = CodeMemory::open(
        setup.index_dir(),
        setup.temp.path().join("moved"),
        "another-commit",
        MemoryOptions::default(),
    )
    .await;
    assert!(
        matches!(other, Err(MemoryError::CommitMismatch { .. })),
        "{other:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_build_that_died_half_way_is_not_reused() -> TestResult {
    let setup = Setup::new()?;
    // What a process killed mid-build leaves: a build directory with part of an index.
    let dead = setup.index_dir().join("building-0123456789abcdef");
    std::fs::create_dir_all(&dead)?;
    std::fs::write(dead.join("meta.json"), "{\"segments\": [")?;
    let (memory, outcome) = setup.open().await?;
    assert!(matches!(outcome, IndexOutcome::Built(_)), "{outcome:?}");
    assert_eq!(
        memory.search("compute invoice total", 1).await?[0].path,
        TARGET_PATH
    );
    Ok(())
}

#[tokio::test]
async fn an_update_finds_the_new_content_and_not_the_old() -> TestResult {
    let setup = Setup::new()?;
    let (mut memory, _) = setup.open().await?;
    let stats = memory.stats();
    assert_eq!(
        memory.update().await?,
        Default::default(),
        "nothing changed yet"
    );

    // An attempt renames the function, removes a file and adds one.
    let target = setup.repo().join(TARGET_PATH);
    let old = std::fs::read_to_string(&target)?;
    std::fs::write(
        &target,
        old.replace("compute_invoice_total", "compute_quote_grand_total")
            .replace(
                "Add up the lines of an invoice",
                "Add up the lines of a quote",
            ),
    )?;
    std::fs::remove_file(setup.repo().join("pkg1/module_1.rs"))?;
    std::fs::write(
        setup.repo().join("billing/refunds.py"),
        "def issue_refund_voucher(order):\n    return order.total\n",
    )?;
    let update = memory.update().await?;
    assert_eq!(
        (update.changed_files, update.removed_files),
        (2, 1),
        "{update:?}"
    );
    assert_eq!(update.chunks_added, 5);
    assert_eq!(memory.stats().files, stats.files);

    let hits = memory.search("compute quote grand total", 5).await?;
    assert_eq!(hits[0].path, TARGET_PATH);
    assert_eq!(hits[0].symbols, ["compute_quote_grand_total"]);
    assert!(hits[0].text.contains("lines of a quote"));
    let hits = memory.search("compute invoice total", 20).await?;
    assert!(
        hits.iter()
            .all(|h| !h.text.contains("compute_invoice_total")),
        "the old function is still found: {hits:#?}"
    );
    assert!(memory.search("issue refund voucher", 1).await?[0].path == "billing/refunds.py");
    let gone = memory.search("module 1", 50).await?;
    assert!(gone.iter().all(|h| h.path != "pkg1/module_1.rs"));

    // A second update sees only what changed since the first.
    std::fs::write(
        setup.repo().join("billing/refunds.py"),
        "def void_refund(r):\n    pass\n",
    )?;
    let again = memory.update().await?;
    assert_eq!(
        (
            again.changed_files,
            again.chunks_removed,
            again.chunks_added
        ),
        (1, 1, 1)
    );
    let hits = memory.search("issue refund voucher", 5).await?;
    assert_eq!(hits[0].symbols, ["void_refund"]);
    assert!(
        hits.iter()
            .all(|h| !h.text.contains("issue_refund_voucher"))
    );

    // The index on disk is still the commit's, for the next task on it.
    let (fresh, outcome) = setup.open().await?;
    assert!(matches!(outcome, IndexOutcome::Reused(_)));
    assert_eq!(
        fresh.search("compute invoice total", 1).await?[0].symbols,
        [TARGET_FUNCTION]
    );
    Ok(())
}

#[tokio::test]
async fn applying_a_commit_s_changes_reindexes_them_without_the_work_tree() -> TestResult {
    let setup = Setup::new()?;
    let (mut memory, _) = setup.open().await?;
    let stats = memory.stats();
    let change = |path: &str, content: Option<&[u8]>| ChangedFile {
        path: path.to_owned(),
        content: content.map(<[u8]>::to_vec),
    };
    let old = std::fs::read_to_string(setup.repo().join(TARGET_PATH))?;
    let renamed = old.replace("compute_invoice_total", "compute_quote_grand_total");
    let applied = memory
        .apply(vec![
            change(TARGET_PATH, Some(renamed.as_bytes())),
            change("pkg1/module_1.rs", None),
            change(
                "billing/refunds.py",
                Some(b"def issue_refund_voucher(order):\n    return order.total\n"),
            ),
            // Left out as a build leaves them out: a skipped directory, a binary file.
            change(
                "node_modules/x/refund.js",
                Some(b"function refundNow() {}\n"),
            ),
            change("billing/logo.png", Some(&[0x89, b'P', 0, 1])),
            // Unchanged content, and a file that was never indexed being deleted.
            change(
                "pkg2/module_2.py",
                Some(&std::fs::read(setup.repo().join("pkg2/module_2.py"))?),
            ),
            change("never/there.py", None),
        ])
        .await?;
    assert_eq!(
        (applied.changed_files, applied.removed_files),
        (2, 1),
        "{applied:?}"
    );
    assert_eq!(memory.stats().files, stats.files);
    // The work tree was not read: it still holds the old function.
    assert!(std::fs::read_to_string(setup.repo().join(TARGET_PATH))?.contains(TARGET_FUNCTION));

    let hits = memory.search("compute quote grand total", 5).await?;
    assert_eq!(hits[0].symbols, ["compute_quote_grand_total"]);
    assert_eq!(
        memory.search("issue refund voucher", 1).await?[0].path,
        "billing/refunds.py"
    );
    assert!(
        memory
            .search("refund now", 50)
            .await?
            .iter()
            .all(|h| !h.path.starts_with("node_modules"))
    );
    assert!(
        memory
            .search("module 1", 50)
            .await?
            .iter()
            .all(|h| h.path != "pkg1/module_1.rs")
    );
    Ok(())
}
