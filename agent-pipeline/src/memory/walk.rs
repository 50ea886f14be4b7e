//! Which files of a work tree are indexed: text files under a size cap, without `.git`, the
//! usual build and dependency directories, and what the root `.gitignore` ignores.

use std::path::{Path, PathBuf};

use super::error::{MemoryError, Result};

/// Directories never indexed, wherever they are: version control, build output, dependencies
/// and caches.
const SKIPPED_DIRS: [&str; 14] = [
    ".git",
    ".hg",
    ".svn",
    "target",
    "node_modules",
    "__pycache__",
    ".venv",
    "venv",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    "dist",
    "build",
    ".idea",
];

/// How many bytes at the start of a file are looked at to tell binary from text.
const SNIFF_BYTES: usize = 8 * 1024;

/// A file found to index: its path relative to the root, with `/` separators, and its text.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub(crate) path: String,
    pub(crate) text: String,
}

/// Every text file of the tree under `root` that is indexed, in path order.
///
/// Files over `max_bytes`, files with a NUL byte in their first 8 KiB or that are not UTF-8,
/// symbolic links, [`SKIPPED_DIRS`] and what the root `.gitignore` ignores are left out.
pub(crate) fn source_files(root: &Path, max_bytes: u64) -> Result<Vec<SourceFile>> {
    let ignore = GitIgnore::read(root);
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        let entries = std::fs::read_dir(&dir).map_err(|e| MemoryError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| MemoryError::io(&dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let file_type = entry.file_type().map_err(|e| MemoryError::io(&dir, e))?;
            let path = relative.join(&name);
            let Some(slash_path) = slash_path(&path) else {
                continue;
            };
            if file_type.is_dir() {
                if !SKIPPED_DIRS.contains(&name.as_str()) && !ignore.ignores(&slash_path, true) {
                    pending.push(path);
                }
            } else if file_type.is_file() && !ignore.ignores(&slash_path, false) {
                let full = root.join(&path);
                let size = entry
                    .metadata()
                    .map_err(|e| MemoryError::io(&full, e))?
                    .len();
                if size > max_bytes {
                    continue;
                }
                let bytes = std::fs::read(&full).map_err(|e| MemoryError::io(&full, e))?;
                if let Some(text) = source_text(bytes, max_bytes) {
                    files.push(SourceFile {
                        path: slash_path,
                        text,
                    });
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A file's bytes as the text to index, or `None` when the file is left out: over
/// `max_bytes`, with a NUL byte in its first 8 KiB, or not UTF-8.
pub(crate) fn source_text(bytes: Vec<u8>, max_bytes: u64) -> Option<String> {
    let too_large = u64::try_from(bytes.len()).map_or(true, |len| len > max_bytes);
    if too_large || bytes[..bytes.len().min(SNIFF_BYTES)].contains(&0) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// Whether a file at `path` (with `/` separators) is indexed as far as its place goes: not
/// under one of [`SKIPPED_DIRS`] or a directory `ignore` ignores, and not ignored itself.
pub(crate) fn is_indexed_path(path: &str, ignore: &GitIgnore) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let Some((_, dirs)) = parts.split_last() else {
        return false;
    };
    let dirs_indexed = (1..=dirs.len()).all(|depth| {
        !SKIPPED_DIRS.contains(&dirs[depth - 1]) && !ignore.ignores(&dirs[..depth].join("/"), true)
    });
    dirs_indexed && !ignore.ignores(path, false)
}

/// `path` with `/` separators, or `None` when a part is not UTF-8.
fn slash_path(path: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = path.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// The patterns of a root `.gitignore` that this reader understands: `name`, `*.ext`,
/// `dir/`, `/anchored/path` and `a/b*` globs with `*` and `?`. Negations (`!pattern`) and
/// nested `.gitignore` files are not read: what they would re-include stays out.
#[derive(Debug, Default)]
pub(crate) struct GitIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug)]
struct Pattern {
    glob: String,
    /// Matched against the whole relative path rather than any file name.
    anchored: bool,
    /// Matches directories only (`build/`).
    dir_only: bool,
}

impl GitIgnore {
    pub(crate) fn read(root: &Path) -> Self {
        let Ok(text) = std::fs::read_to_string(root.join(".gitignore")) else {
            return Self::default();
        };
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('!'))
            .map(|line| {
                let dir_only = line.ends_with('/');
                let line = line.trim_end_matches('/');
                let anchored = line.contains('/');
                Pattern {
                    glob: line.trim_start_matches('/').to_owned(),
                    anchored,
                    dir_only,
                }
            })
            .filter(|p| !p.glob.is_empty())
            .collect();
        Self { patterns }
    }

    pub(crate) fn ignores(&self, path: &str, is_dir: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.patterns
            .iter()
            .any(|p| (is_dir || !p.dir_only) && glob(&p.glob, if p.anchored { path } else { name }))
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters but `/`, `**` any run
/// at all, and `?` one character but `/`.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            let rest = rest.strip_prefix(&['/']).unwrap_or(rest);
            (0..=t.len()).any(|i| glob_at(rest, &t[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if glob_at(rest, &t[i..]) {
                    return true;
                }
                if t.get(i) == Some(&'/') {
                    break;
                }
            }
            false
        }
        Some('?') => t.first().is_some_and(|c| *c != '/') && glob_at(&p[1..], &t[1..]),
        Some(c) => t.first() == Some(c) && glob_at(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_gitignore_patterns_do() {
        assert!(glob("*.log", "debug.log"));
        assert!(!glob("*.log", "logs/debug.txt"));
        assert!(glob("docs/*.md", "docs/a.md"));
        assert!(!glob("docs/*.md", "docs/sub/a.md"));
        assert!(glob("docs/**/a.md", "docs/sub/deeper/a.md"));
        assert!(glob("fil?.py", "file.py"));
    }

    #[test]
    fn the_tree_walk_skips_what_is_not_source()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let temp = tempfile::tempdir()?;
        let root = temp.path();
        for dir in [
            "src",
            ".git",
            "node_modules/x",
            "generated",
            "keep/generated",
        ] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        std::fs::write(root.join(".gitignore"), "# comment\n*.log\n/generated/\n")?;
        std::fs::write(root.join("src/main.rs"), "fn main() {}\n")?;
        std::fs::write(root.join(".git/config"), "[core]\n")?;
        std::fs::write(root.join("node_modules/x/index.js"), "x\n")?;
        std::fs::write(root.join("generated/out.py"), "x = 1\n")?;
        std::fs::write(root.join("keep/generated/in.py"), "y = 1\n")?;
        std::fs::write(root.join("run.log"), "log\n")?;
        std::fs::write(root.join("image.png"), [0x89, b'P', b'N', b'G', 0, 0, 1])?;
        std::fs::write(root.join("big.txt"), "x".repeat(2_000))?;
        let files = source_files(root, 1_000)?;
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [".gitignore", "keep/generated/in.py", "src/main.rs"]);

        // A file named by a commit is judged as the walk judges it.
        let ignore = GitIgnore::read(root);
        let indexed: Vec<&str> = [
            ".gitignore",
            "src/main.rs",
            ".git/config",
            "node_modules/x/index.js",
            "generated/out.py",
            "keep/generated/in.py",
            "run.log",
            "src/target/x.rs",
        ]
        .into_iter()
        .filter(|path| is_indexed_path(path, &ignore))
        .collect();
        assert_eq!(
            indexed,
            [".gitignore", "src/main.rs", "keep/generated/in.py"]
        );
        assert_eq!(
            source_text(b"ok\n".to_vec(), 1_000).as_deref(),
            Some("ok\n")
        );
        assert_eq!(source_text(vec![b'x'; 2_000], 1_000), None);
        assert_eq!(source_text(vec![0x89, b'P', 0, 1], 1_000), None);
        assert_eq!(source_text(vec![0xff, 0xfe, b'a'], 1_000), None);
        Ok(())
    }
}
