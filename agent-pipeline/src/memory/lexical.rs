//! The lexical index: BM25 (tantivy) over each chunk's text, path and symbol names, the words
//! cut by [`super::words`]. A match in a symbol name counts most, then one in the path.

use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::directory::{Directory, RamDirectory};
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::chunk::Chunk;
use super::error::{MemoryError, Result};
use super::words::{word_text, words};

/// How much more a query word counts in a symbol name than in the text.
const SYMBOL_BOOST: f32 = 3.0;
/// How much more a query word counts in the path than in the text.
const PATH_BOOST: f32 = 2.0;
/// The memory the index writer may use before it writes a segment.
const WRITER_MEMORY: usize = 64 << 20;

/// A chunk as stored in the index, with the id the memory gave it.
#[derive(Debug, Clone)]
pub(crate) struct StoredChunk {
    pub(crate) id: u64,
    pub(crate) chunk: Chunk,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    path: Field,
    path_words: Field,
    symbols: Field,
    body: Field,
    symbol_names: Field,
    text: Field,
    start_line: Field,
    end_line: Field,
}

fn schema() -> (Schema, Fields) {
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let mut builder = Schema::builder();
    let fields = Fields {
        id: builder.add_u64_field("id", INDEXED | STORED),
        path: builder.add_text_field("path", STRING | STORED),
        path_words: builder.add_text_field("path_words", words.clone()),
        symbols: builder.add_text_field("symbols", words.clone()),
        body: builder.add_text_field("body", words),
        symbol_names: builder.add_text_field("symbol_names", STORED),
        text: builder.add_text_field("text", STORED),
        start_line: builder.add_u64_field("start_line", STORED),
        end_line: builder.add_u64_field("end_line", STORED),
    };
    (builder.build(), fields)
}

/// An open lexical index, on disk (as built) or in memory (once updated).
pub(crate) struct Lexical {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

impl std::fmt::Debug for Lexical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lexical").finish_non_exhaustive()
    }
}

impl Lexical {
    /// Builds an index of `chunks` in the empty directory `dir`.
    pub(crate) fn build(dir: &Path, chunks: &[StoredChunk]) -> Result<Self> {
        let (schema, fields) = schema();
        let index = Index::create_in_dir(dir, schema)?;
        let mut writer: IndexWriter = index.writer(WRITER_MEMORY)?;
        for stored in chunks {
            writer.add_document(document(&fields, stored))?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        Self::with_index(index, fields)
    }

    /// Opens the index built in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let index = Index::open_in_dir(dir)?;
        let (_, fields) = schema();
        Self::with_index(index, fields)
    }

    fn with_index(index: Index, fields: Fields) -> Result<Self> {
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            fields,
        })
    }

    /// A copy of the index on disk in `dir`, in memory, to update without touching the
    /// directory (which other tasks on the same commit reuse).
    pub(crate) fn copy_to_memory(dir: &Path) -> Result<Self> {
        let ram = RamDirectory::create();
        let entries = std::fs::read_dir(dir).map_err(|e| MemoryError::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| MemoryError::io(dir, e))?;
            let name = entry.file_name();
            // Lock files belong to the processes that hold them.
            if name.to_string_lossy().starts_with(".tantivy-") || !entry.path().is_file() {
                continue;
            }
            let bytes =
                std::fs::read(entry.path()).map_err(|e| MemoryError::io(&entry.path(), e))?;
            ram.atomic_write(Path::new(&name), &bytes)
                .map_err(|e| MemoryError::io(&entry.path(), e))?;
        }
        let index = Index::open(ram)?;
        let (_, fields) = schema();
        Self::with_index(index, fields)
    }

    /// Removes the chunks of `removed_paths` and adds `added`.
    pub(crate) fn replace(&self, removed_paths: &[String], added: &[StoredChunk]) -> Result<()> {
        let mut writer: IndexWriter = self.index.writer(WRITER_MEMORY)?;
        for path in removed_paths {
            writer.delete_term(Term::from_field_text(self.fields.path, path));
        }
        for stored in added {
            writer.add_document(document(&self.fields, stored))?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        Ok(())
    }

    /// The `limit` best chunks for `query` by BM25, best first, with their scores.
    pub(crate) fn search(&self, query: &str, limit: usize) -> Result<Vec<(f32, StoredChunk)>> {
        let mut terms = words(query);
        terms.sort();
        terms.dedup();
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in &terms {
            for (field, boost) in [
                (self.fields.body, 1.0),
                (self.fields.path_words, PATH_BOOST),
                (self.fields.symbols, SYMBOL_BOOST),
            ] {
                let query = TermQuery::new(
                    Term::from_field_text(field, term),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(query), boost)),
                ));
            }
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        top.into_iter()
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher.doc(address)?;
                Ok((score, self.stored(&doc)?))
            })
            .collect()
    }

    /// The chunks with these ids, in the order of `ids` (ids not in the index are left out).
    pub(crate) fn by_ids(&self, ids: &[u64]) -> Result<Vec<StoredChunk>> {
        let searcher = self.reader.searcher();
        let mut found = Vec::new();
        for id in ids {
            let query = TermQuery::new(
                Term::from_field_u64(self.fields.id, *id),
                IndexRecordOption::Basic,
            );
            let top = searcher.search(&query, &TopDocs::with_limit(1).order_by_score())?;
            if let Some((_, address)) = top.into_iter().next() {
                let doc: TantivyDocument = searcher.doc(address)?;
                found.push(self.stored(&doc)?);
            }
        }
        Ok(found)
    }

    fn stored(&self, doc: &TantivyDocument) -> Result<StoredChunk> {
        let f = &self.fields;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let number = |field| doc.get_first(field).and_then(|v| v.as_u64());
        let missing = || MemoryError::Index("a stored chunk lacks a field".to_owned());
        let line = |field| {
            number(field)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(missing)
        };
        Ok(StoredChunk {
            id: number(f.id).ok_or_else(missing)?,
            chunk: Chunk {
                path: text(f.path).ok_or_else(missing)?,
                start_line: line(f.start_line)?,
                end_line: line(f.end_line)?,
                symbols: text(f.symbol_names)
                    .unwrap_or_default()
                    .split('\n')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                text: text(f.text).ok_or_else(missing)?,
            },
        })
    }
}

fn document(fields: &Fields, stored: &StoredChunk) -> TantivyDocument {
    let chunk = &stored.chunk;
    let mut doc = TantivyDocument::new();
    doc.add_u64(fields.id, stored.id);
    doc.add_text(fields.path, &chunk.path);
    doc.add_text(fields.path_words, word_text(&chunk.path));
    doc.add_text(fields.symbols, word_text(&chunk.symbols.join(" ")));
    doc.add_text(fields.body, word_text(&chunk.text));
    doc.add_text(fields.symbol_names, chunk.symbols.join("\n"));
    doc.add_text(fields.text, &chunk.text);
    doc.add_u64(fields.start_line, u64::from(chunk.start_line));
    doc.add_u64(fields.end_line, u64::from(chunk.end_line));
    doc
}
