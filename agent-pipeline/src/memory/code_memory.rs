//! [`CodeMemory`]: opening (building or reusing) the index of a commit, updating it after an
//! attempt, and searching it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::chunk::{ChunkConfig, chunk_file};
use super::embed::{EmbedError, Embedder};
use super::error::{MemoryError, Result};
use super::lexical::{Lexical, StoredChunk};
use super::manifest::{ChunkEntry, FORMAT, Manifest, content_hash};
use super::rank::fuse;
use super::vectors::{Vectors, cosine, unit};
use super::walk::{GitIgnore, SourceFile, is_indexed_path, source_files, source_text};
use crate::execution::ChangedFile;

/// The finished lexical index and its manifest, inside the index directory.
const INDEX: &str = "index";
/// The manifest, inside [`INDEX`].
const MANIFEST: &str = "manifest.json";
/// The embeddings cache, beside [`INDEX`].
const VECTORS: &str = "vectors.bin";
/// The prefix of the directories an index is built in before it is renamed to [`INDEX`].
const BUILDING: &str = "building-";
/// A build directory older than this was left by a process that died: it is removed.
const STALE_BUILD: Duration = Duration::from_secs(3600);
/// At most this much of a chunk is sent to be embedded (about 2,000 tokens: within every
/// embeddings model's input limit).
const MAX_EMBED_BYTES: usize = 8 * 1024;

/// How a work tree is indexed, and with which embeddings.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// How files are cut into chunks.
    pub chunking: ChunkConfig,
    /// Files larger than this are not indexed (default 256 KiB).
    pub max_file_bytes: u64,
    /// Embeddings for a hybrid search; `None` (the default): lexical only.
    pub embedder: Option<Arc<dyn Embedder>>,
    /// How many chunks one embeddings request carries (default 64).
    pub embed_batch: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            chunking: ChunkConfig::default(),
            max_file_bytes: 256 * 1024,
            embedder: None,
            embed_batch: 64,
        }
    }
}

/// The size of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Files indexed.
    pub files: usize,
    /// Chunks indexed.
    pub chunks: usize,
}

/// What [`CodeMemory::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOutcome {
    /// No index of the commit existed: the work tree was read and indexed.
    Built(IndexStats),
    /// The index of the commit was opened as it was: nothing was read or indexed.
    Reused(IndexStats),
}

/// Whether searches use embeddings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmbeddingsStatus {
    /// No embedder was configured: lexical search only.
    Off,
    /// Every chunk has a vector; `embedded` of them were computed now, the others came from
    /// the cache beside the index.
    Ready {
        /// Chunks with a vector.
        vectors: usize,
        /// Chunks embedded by this call.
        embedded: usize,
    },
    /// The embedder failed (no embeddings endpoint, an error): lexical search only.
    Unavailable {
        /// Why, in words.
        reason: String,
    },
}

/// What [`CodeMemory::update`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateStats {
    /// Files added or changed since the index (or the last update).
    pub changed_files: usize,
    /// Files gone since then.
    pub removed_files: usize,
    /// Chunks of those files taken out of the index.
    pub chunks_removed: usize,
    /// Chunks of the changed files put in.
    pub chunks_added: usize,
}

/// A chunk that answers a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The file, relative to the work tree, with `/` separators.
    pub path: String,
    /// The chunk's first line (1-based).
    pub start_line: u32,
    /// The chunk's last line (1-based, inclusive).
    pub end_line: u32,
    /// The names defined in the chunk.
    pub symbols: Vec<String>,
    /// The chunk's text, as indexed.
    pub text: String,
    /// The rank score: BM25, or the reciprocal rank fusion of BM25 and embeddings when both
    /// were used. Higher is better; comparable within one search only.
    pub score: f32,
    /// The BM25 score, when the lexical index found the chunk.
    pub lexical_score: Option<f32>,
    /// The cosine similarity to the question, when embeddings found the chunk.
    pub vector_score: Option<f32>,
}

/// The index of one repository at one commit, and the work tree it describes.
///
/// The index on disk is never changed once built, so that every task on the same commit can
/// reuse it; [`update`](Self::update) works on a copy in memory. See the
/// [module](super) for an example.
pub struct CodeMemory {
    dir: PathBuf,
    work_tree: PathBuf,
    options: MemoryOptions,
    manifest: Manifest,
    lexical: Arc<Lexical>,
    /// Whether `lexical` is the in-memory copy (after an update).
    in_memory: bool,
    /// The vectors, when embeddings are ready.
    vectors: Option<Vectors>,
    embeddings: EmbeddingsStatus,
}

impl std::fmt::Debug for CodeMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeMemory")
            .field("dir", &self.dir)
            .field("work_tree", &self.work_tree)
            .field("commit", &self.manifest.commit)
            .field("chunks", &self.manifest.chunks.len())
            .field("embeddings", &self.embeddings)
            .finish_non_exhaustive()
    }
}

impl CodeMemory {
    /// Whether `index_dir` already holds a complete index, which [`open`](Self::open) reuses
    /// without reading the work tree.
    pub fn is_built(index_dir: &Path) -> bool {
        index_dir.join(INDEX).is_dir()
    }

    /// Opens the index of `work_tree` at `commit` kept in `index_dir` (the pipeline's
    /// `DATA_DIR/memory/<repository>/<commit>/`), building it when there is none.
    ///
    /// A build happens in a directory of its own inside `index_dir` and is renamed into place
    /// only when complete, so a crash never leaves a half index that a later call would
    /// reuse; of two processes building the same commit at once, the first to finish wins and
    /// the other reuses its index. Nothing outside `index_dir` is written.
    ///
    /// With an embedder, the chunks without a vector in the cache beside the index are
    /// embedded; when that fails (a provider without an embeddings endpoint, say), the reason
    /// is logged and [`embeddings`](Self::embeddings) says so: searches are then lexical.
    ///
    /// # Errors
    ///
    /// [`MemoryError`] when the work tree or the index directory cannot be read or written,
    /// or when `index_dir` holds an index of another commit.
    pub async fn open(
        index_dir: impl Into<PathBuf>,
        work_tree: impl Into<PathBuf>,
        commit: &str,
        options: MemoryOptions,
    ) -> Result<(Self, IndexOutcome)> {
        let dir = index_dir.into();
        let work_tree = work_tree.into();
        let opened = {
            let (dir, work_tree, commit) = (dir.clone(), work_tree.clone(), commit.to_owned());
            let (chunking, max_bytes) = (options.chunking, options.max_file_bytes);
            blocking(move || open_or_build(&dir, &work_tree, &commit, &chunking, max_bytes)).await?
        };
        let (lexical, manifest, outcome) = opened;
        let mut memory = Self {
            dir,
            work_tree,
            options,
            manifest,
            lexical: Arc::new(lexical),
            in_memory: false,
            vectors: None,
            embeddings: EmbeddingsStatus::Off,
        };
        if let Some(embedder) = memory.options.embedder.clone() {
            let vectors = Vectors::load(&memory.dir.join(VECTORS), embedder.model());
            memory.embed_missing(embedder, vectors).await?;
        }
        Ok((memory, outcome))
    }

    /// Whether searches use embeddings, and why not.
    pub fn embeddings(&self) -> &EmbeddingsStatus {
        &self.embeddings
    }

    /// The size of the index as it is now.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            files: self.manifest.files.len(),
            chunks: self.manifest.chunks.len(),
        }
    }

    /// Re-indexes what changed in the work tree since the index was built or last updated:
    /// every file is read again and those whose content hash differs from the manifest's
    /// (or that are new, or gone) are re-chunked. The index on disk stays as built (other
    /// tasks on the commit reuse it): the first update copies it into memory and changes the
    /// copy. New chunks are embedded when embeddings are ready.
    ///
    /// # Errors
    ///
    /// [`MemoryError`] when the work tree cannot be read or the index cannot be changed.
    pub async fn update(&mut self) -> Result<UpdateStats> {
        let work_tree = self.work_tree.clone();
        let max_bytes = self.options.max_file_bytes;
        self.reindex(move |manifest| changes_in_work_tree(&work_tree, manifest, max_bytes))
            .await
    }

    /// Re-indexes the files `changes` names, as a commit has them
    /// ([`TaskWorkspace::changed_files`](crate::execution::TaskWorkspace::changed_files) of
    /// the base and an attempt, say), without reading the work tree: a file with content is re-chunked
    /// when it differs from the index (the same files are left out as when building: too
    /// large, binary, not UTF-8, under a skipped or ignored directory), one without is taken
    /// out. Like [`update`](Self::update), it changes a copy in memory, never the index on
    /// disk.
    ///
    /// # Errors
    ///
    /// [`MemoryError`] when the index cannot be changed.
    pub async fn apply(&mut self, changes: Vec<ChangedFile>) -> Result<UpdateStats> {
        let work_tree = self.work_tree.clone();
        let max_bytes = self.options.max_file_bytes;
        self.reindex(move |manifest| Ok(named_changes(&work_tree, manifest, changes, max_bytes)))
            .await
    }

    /// Replaces the chunks of the files `find_changes` says differ from the manifest (the
    /// changed ones with their new text, the removed ones by path), and embeds new chunks
    /// when embeddings are ready.
    async fn reindex(
        &mut self,
        find_changes: impl FnOnce(&Manifest) -> Result<Changes> + Send + 'static,
    ) -> Result<UpdateStats> {
        let index = self.dir.join(INDEX);
        let mut manifest = self.manifest.clone();
        let lexical = self.lexical.clone();
        let in_memory = self.in_memory;
        let chunking = self.options.chunking;
        let (lexical, manifest, stats) = blocking(move || {
            let changes = find_changes(&manifest)?;
            let stats = apply_changes(
                &index,
                &mut manifest,
                lexical,
                in_memory,
                changes,
                &chunking,
            )?;
            Ok((stats.0, manifest, stats.1))
        })
        .await?;
        if let Some(lexical) = lexical {
            self.lexical = lexical;
            self.in_memory = true;
        }
        self.manifest = manifest;
        if let (Some(vectors), Some(embedder)) =
            (self.vectors.take(), self.options.embedder.clone())
        {
            self.embed_missing(embedder, vectors).await?;
        }
        tracing::info!(
            dir = %self.dir.display(),
            changed = stats.changed_files,
            removed = stats.removed_files,
            chunks_added = stats.chunks_added,
            "updated the code index"
        );
        Ok(stats)
    }

    /// The `k` chunks that best answer `query`, best first: by BM25 over their text, path and
    /// symbol names, fused with the cosine similarity of their embeddings when embeddings are
    /// ready (reciprocal rank fusion). When the question cannot be embedded, the search is
    /// lexical (the reason is logged).
    ///
    /// # Errors
    ///
    /// [`MemoryError::Index`] when the index cannot be read.
    pub async fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let pool = k.max(10) * 4;
        let lexical = self.lexical.search(query, pool)?;
        let Some(question) = self.embed_query(query).await else {
            return Ok(lexical
                .into_iter()
                .take(k)
                .map(|(score, stored)| hit(stored, score, Some(score), None))
                .collect());
        };
        let mut by_vector: Vec<(u64, f32)> = match &self.vectors {
            Some(vectors) => self
                .manifest
                .chunks
                .iter()
                .filter_map(|c| Some((c.id, cosine(&question, vectors.by_hash.get(&c.hash)?))))
                .collect(),
            None => Vec::new(),
        };
        by_vector.sort_by(|a, b| b.1.total_cmp(&a.1));
        by_vector.truncate(pool);
        let lexical_ids: Vec<u64> = lexical.iter().map(|(_, s)| s.id).collect();
        let vector_ids: Vec<u64> = by_vector.iter().map(|(id, _)| *id).collect();
        let fused: Vec<(u64, f32)> = fuse(&lexical_ids, &vector_ids)
            .into_iter()
            .take(k)
            .collect();
        let lexical_scores: HashMap<u64, f32> = lexical.iter().map(|(s, c)| (c.id, *s)).collect();
        let vector_scores: HashMap<u64, f32> = by_vector.into_iter().collect();
        let mut chunks: HashMap<u64, StoredChunk> =
            lexical.into_iter().map(|(_, c)| (c.id, c)).collect();
        let missing: Vec<u64> = fused
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !chunks.contains_key(id))
            .collect();
        chunks.extend(
            self.lexical
                .by_ids(&missing)?
                .into_iter()
                .map(|c| (c.id, c)),
        );
        Ok(fused
            .into_iter()
            .filter_map(|(id, score)| {
                let stored = chunks.remove(&id)?;
                Some(hit(
                    stored,
                    score,
                    lexical_scores.get(&id).copied(),
                    vector_scores.get(&id).copied(),
                ))
            })
            .collect())
    }

    /// The question as a unit vector, when embeddings are ready and the embedder answers.
    async fn embed_query(&self, query: &str) -> Option<Vec<f32>> {
        let vectors = self.vectors.as_ref()?;
        let embedder = self.options.embedder.as_ref()?;
        match embedder.embed(&[query.to_owned()]).await {
            Ok(mut answer) if answer.len() == 1 && answer[0].len() == vectors.dims => {
                Some(unit(answer.remove(0)))
            }
            Ok(_) => {
                tracing::warn!(
                    "the question's embedding does not match the index: searching lexically"
                );
                None
            }
            Err(error) => {
                tracing::warn!(%error, "cannot embed the question: searching lexically");
                None
            }
        }
    }

    /// Embeds the chunks `vectors` lacks, saves the cache, and sets the embeddings status.
    async fn embed_missing(
        &mut self,
        embedder: Arc<dyn Embedder>,
        mut vectors: Vectors,
    ) -> Result<()> {
        let mut seen = BTreeSet::new();
        let missing: Vec<&ChunkEntry> = self
            .manifest
            .chunks
            .iter()
            .filter(|c| !vectors.by_hash.contains_key(&c.hash) && seen.insert(c.hash))
            .collect();
        let ids: Vec<u64> = missing.iter().map(|c| c.id).collect();
        let stored = self.lexical.by_ids(&ids)?;
        let mut embedded = 0;
        let mut failure: Option<EmbedError> = None;
        for batch in stored.chunks(self.options.embed_batch.max(1)) {
            let inputs: Vec<String> = batch.iter().map(|s| embedding_input(&s.chunk)).collect();
            match embedder.embed(&inputs).await {
                Ok(answer) if answer.len() == inputs.len() => {
                    for (input, vector) in inputs.iter().zip(answer) {
                        if vectors.insert(content_hash(input.as_bytes()), vector) {
                            embedded += 1;
                        }
                    }
                }
                Ok(answer) => {
                    failure = Some(EmbedError::Protocol(format!(
                        "{} vectors for {} inputs",
                        answer.len(),
                        inputs.len()
                    )));
                    break;
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if embedded > 0 {
            vectors.save(&self.dir.join(VECTORS))?;
        }
        let with_vector = self
            .manifest
            .chunks
            .iter()
            .filter(|c| vectors.by_hash.contains_key(&c.hash))
            .count();
        if failure.is_none() && with_vector < self.manifest.chunks.len() {
            failure = Some(EmbedError::Protocol(
                "vectors of different lengths for one model".to_owned(),
            ));
        }
        match failure {
            None => {
                self.embeddings = EmbeddingsStatus::Ready {
                    vectors: with_vector,
                    embedded,
                };
                self.vectors = Some(vectors);
            }
            Some(error) => {
                match &error {
                    EmbedError::Unsupported { .. } => {
                        tracing::info!(%error, model = embedder.model(), "no embeddings: the code memory searches lexically")
                    }
                    _ => {
                        tracing::warn!(%error, model = embedder.model(), "embeddings failed: the code memory searches lexically")
                    }
                }
                self.embeddings = EmbeddingsStatus::Unavailable {
                    reason: error.to_string(),
                };
                self.vectors = None;
            }
        }
        Ok(())
    }
}

/// What is sent to be embedded for a chunk: its path and text, cut to [`MAX_EMBED_BYTES`].
/// Its hash keys the chunk's vector in the cache.
fn embedding_input(chunk: &super::chunk::Chunk) -> String {
    let mut input = format!("{}\n{}", chunk.path, chunk.text);
    if input.len() > MAX_EMBED_BYTES {
        let end = (0..=MAX_EMBED_BYTES)
            .rev()
            .find(|i| input.is_char_boundary(*i))
            .unwrap_or(0);
        input.truncate(end);
    }
    input
}

fn hit(stored: StoredChunk, score: f32, lexical: Option<f32>, vector: Option<f32>) -> Hit {
    let chunk = stored.chunk;
    Hit {
        path: chunk.path,
        start_line: chunk.start_line,
        end_line: chunk.end_line,
        symbols: chunk.symbols,
        text: chunk.text,
        score,
        lexical_score: lexical,
        vector_score: vector,
    }
}

/// Runs `work` on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| MemoryError::Task(e.to_string()))?
}

/// Opens the finished index in `dir`, or builds it.
fn open_or_build(
    dir: &Path,
    work_tree: &Path,
    commit: &str,
    chunking: &ChunkConfig,
    max_bytes: u64,
) -> Result<(Lexical, Manifest, IndexOutcome)> {
    let index = dir.join(INDEX);
    if let Some(opened) = open_finished(dir, commit)? {
        return Ok(opened);
    }
    std::fs::create_dir_all(dir).map_err(|e| MemoryError::io(dir, e))?;
    remove_stale_builds(dir);
    let building = dir.join(format!("{BUILDING}{}", uuid::Uuid::new_v4().simple()));
    let built = build(&building, work_tree, commit, chunking, max_bytes);
    let stats = match built {
        Ok(stats) => stats,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(error);
        }
    };
    if let Err(error) = std::fs::rename(&building, &index) {
        let _ = std::fs::remove_dir_all(&building);
        // Another process finished the same index first: use it.
        if let Some(opened) = open_finished(dir, commit)? {
            return Ok(opened);
        }
        return Err(MemoryError::io(&index, error));
    }
    // The index was built through the directory's old name: open it under the new one.
    let lexical = Lexical::open(&index)?;
    let manifest = Manifest::read(&index.join(MANIFEST))?;
    tracing::info!(dir = %dir.display(), files = stats.files, chunks = stats.chunks, "built the code index");
    Ok((lexical, manifest, IndexOutcome::Built(stats)))
}

/// The finished index in `dir`, if there is one of the current format; one of an older
/// format is removed.
fn open_finished(dir: &Path, commit: &str) -> Result<Option<(Lexical, Manifest, IndexOutcome)>> {
    let index = dir.join(INDEX);
    let manifest_path = index.join(MANIFEST);
    if !manifest_path.exists() {
        return Ok(None);
    }
    let manifest = Manifest::read(&manifest_path)?;
    if manifest.format != FORMAT {
        let old = dir.join(format!("{BUILDING}old-{}", uuid::Uuid::new_v4().simple()));
        std::fs::rename(&index, &old).map_err(|e| MemoryError::io(&index, e))?;
        let _ = std::fs::remove_dir_all(&old);
        return Ok(None);
    }
    if manifest.commit != commit {
        return Err(MemoryError::CommitMismatch {
            dir: dir.to_path_buf(),
            expected: commit.to_owned(),
            found: manifest.commit,
        });
    }
    let lexical = Lexical::open(&index)?;
    let stats = IndexStats {
        files: manifest.files.len(),
        chunks: manifest.chunks.len(),
    };
    Ok(Some((lexical, manifest, IndexOutcome::Reused(stats))))
}

/// Builds the index of `work_tree` in the new directory `building`.
fn build(
    building: &Path,
    work_tree: &Path,
    commit: &str,
    chunking: &ChunkConfig,
    max_bytes: u64,
) -> Result<IndexStats> {
    std::fs::create_dir(building).map_err(|e| MemoryError::io(building, e))?;
    let files = source_files(work_tree, max_bytes)?;
    let mut manifest = Manifest {
        format: FORMAT,
        commit: commit.to_owned(),
        files: BTreeMap::new(),
        chunks: Vec::new(),
        next_id: 0,
    };
    let mut stored = Vec::new();
    for file in &files {
        manifest
            .files
            .insert(file.path.clone(), content_hash(file.text.as_bytes()));
        stored.extend(new_chunks(&mut manifest, &file.path, &file.text, chunking));
    }
    drop(Lexical::build(building, &stored)?);
    manifest.write(&building.join(MANIFEST))?;
    Ok(IndexStats {
        files: manifest.files.len(),
        chunks: manifest.chunks.len(),
    })
}

/// The chunks of one file, with new ids, entered in `manifest`.
fn new_chunks(
    manifest: &mut Manifest,
    path: &str,
    text: &str,
    chunking: &ChunkConfig,
) -> Vec<StoredChunk> {
    chunk_file(path, text, chunking)
        .into_iter()
        .map(|chunk| {
            let id = manifest.next_id;
            manifest.next_id += 1;
            manifest.chunks.push(ChunkEntry {
                id,
                path: chunk.path.clone(),
                start_line: chunk.start_line,
                end_line: chunk.end_line,
                hash: content_hash(embedding_input(&chunk).as_bytes()),
            });
            StoredChunk { id, chunk }
        })
        .collect()
}

/// The files that differ from a manifest: those added or changed, with their text, and
/// those gone.
struct Changes {
    changed: Vec<SourceFile>,
    removed: Vec<String>,
}

/// The work tree's files that differ from `manifest`: every file is read and compared by
/// content hash.
fn changes_in_work_tree(work_tree: &Path, manifest: &Manifest, max_bytes: u64) -> Result<Changes> {
    let files = source_files(work_tree, max_bytes)?;
    let current: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let removed = manifest
        .files
        .keys()
        .filter(|path| !current.contains(path.as_str()))
        .cloned()
        .collect();
    let changed = files
        .into_iter()
        .filter(|f| manifest.files.get(&f.path) != Some(&content_hash(f.text.as_bytes())))
        .collect();
    Ok(Changes { changed, removed })
}

/// The files of `changes` that differ from `manifest`. A file the index would not hold (see
/// [`walk::source_text`](super::walk::source_text)) counts as removed.
fn named_changes(
    work_tree: &Path,
    manifest: &Manifest,
    changes: Vec<ChangedFile>,
    max_bytes: u64,
) -> Changes {
    let ignore = GitIgnore::read(work_tree);
    let mut found = Changes {
        changed: Vec::new(),
        removed: Vec::new(),
    };
    for change in changes {
        let text = change
            .content
            .filter(|_| is_indexed_path(&change.path, &ignore))
            .and_then(|bytes| source_text(bytes, max_bytes));
        match text {
            Some(text)
                if manifest.files.get(&change.path) == Some(&content_hash(text.as_bytes())) => {}
            Some(text) => found.changed.push(SourceFile {
                path: change.path,
                text,
            }),
            None if manifest.files.contains_key(&change.path) => found.removed.push(change.path),
            None => {}
        }
    }
    found
}

/// Re-indexes `changes`; the new in-memory index when something changed.
fn apply_changes(
    index: &Path,
    manifest: &mut Manifest,
    lexical: Arc<Lexical>,
    in_memory: bool,
    changes: Changes,
    chunking: &ChunkConfig,
) -> Result<(Option<Arc<Lexical>>, UpdateStats)> {
    let Changes { changed, removed } = changes;
    if changed.is_empty() && removed.is_empty() {
        return Ok((None, UpdateStats::default()));
    }
    let lexical = if in_memory {
        lexical
    } else {
        Arc::new(Lexical::copy_to_memory(index)?)
    };
    let replaced: BTreeSet<String> = changed
        .iter()
        .map(|f| f.path.clone())
        .chain(removed.iter().cloned())
        .collect();
    let before = manifest.chunks.len();
    manifest.chunks.retain(|c| !replaced.contains(&c.path));
    let chunks_removed = before - manifest.chunks.len();
    let mut added = Vec::new();
    for file in &changed {
        manifest
            .files
            .insert(file.path.clone(), content_hash(file.text.as_bytes()));
        added.extend(new_chunks(manifest, &file.path, &file.text, chunking));
    }
    for path in &removed {
        manifest.files.remove(path);
    }
    let replaced: Vec<String> = replaced.into_iter().collect();
    lexical.replace(&replaced, &added)?;
    Ok((
        Some(lexical),
        UpdateStats {
            changed_files: changed.len(),
            removed_files: removed.len(),
            chunks_removed,
            chunks_added: added.len(),
        },
    ))
}

/// Removes the build directories of processes that died mid-build.
fn remove_stale_builds(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(BUILDING)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age > STALE_BUILD);
        if stale {
            tracing::info!(path = %entry.path().display(), "removing an abandoned index build");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The worker holds a memory across awaits in spawned tasks: it and its futures must be
/// `Send` (and the memory `Sync`, to search from several tasks). A compile-time check.
const _: () = {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    #[allow(dead_code)]
    fn futures_are_send(memory: &mut CodeMemory) {
        send_sync::<CodeMemory>();
        send(&memory.search("", 1));
        send(&memory.update());
        send(&memory.apply(Vec::new()));
        send(&CodeMemory::open("", "", "", MemoryOptions::default()));
    }
};
