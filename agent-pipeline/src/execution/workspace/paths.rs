//! Checking the paths a model gives, and writing and removing files in a work tree without
//! ever following a symbolic link.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::Path;

use super::{WorkspaceError, WorkspaceLimits};
use crate::output::FileContent;

/// Checks file paths and sizes against the limits, without touching the disk.
///
/// A path must be relative, use `/` between its components, and stay inside the project: no
/// empty, `.` or `..` component, no backslash or control character, nothing inside `.git`.
/// Every path may appear once, and a path may not be both a file and the directory of
/// another file (`a` and `a/b`). The errors name the path and say what to change.
///
/// ```
/// use agent_pipeline::execution::{WorkspaceLimits, check_files};
/// use agent_pipeline::output::FileContent;
///
/// let file = |path: &str| FileContent { path: path.into(), content: "x".into() };
/// let limits = WorkspaceLimits::default();
/// assert!(check_files(&[file("src/lib.rs"), file("tests/it.rs")], &limits).is_ok());
/// let refused = check_files(&[file("../outside.rs")], &limits);
/// assert!(refused.is_err_and(|e| e.to_string().contains("../outside.rs")));
/// ```
pub fn check_files(files: &[FileContent], limits: &WorkspaceLimits) -> Result<(), WorkspaceError> {
    if files.len() > limits.max_files {
        return Err(WorkspaceError::Limit(format!(
            "{} files is more than the limit of {} files per step; write fewer, larger files",
            files.len(),
            limits.max_files
        )));
    }
    let mut total: u64 = 0;
    for file in files {
        check_path(&file.path, limits)?;
        let size = u64::try_from(file.content.len()).unwrap_or(u64::MAX);
        if size > limits.max_file_bytes {
            return Err(WorkspaceError::Limit(format!(
                "file {:?} is {size} bytes, more than the limit of {} bytes per file",
                file.path, limits.max_file_bytes
            )));
        }
        total = total.saturating_add(size);
    }
    if total > limits.max_total_bytes {
        return Err(WorkspaceError::Limit(format!(
            "the files add up to {total} bytes, more than the limit of {} bytes per step",
            limits.max_total_bytes
        )));
    }
    let mut seen = HashSet::with_capacity(files.len());
    for file in files {
        if !seen.insert(file.path.as_str()) {
            return Err(refused(
                &file.path,
                "is given more than once; give each file once, with its whole content",
            ));
        }
    }
    for file in files {
        for (end, _) in file.path.match_indices('/') {
            let directory = &file.path[..end];
            if seen.contains(directory) {
                return Err(refused(
                    &file.path,
                    &format!(
                        "is inside {directory:?}, which is also given as a file; \
                         a path cannot be both a file and a directory"
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn check_path(path: &str, limits: &WorkspaceLimits) -> Result<(), WorkspaceError> {
    if path.is_empty() {
        return Err(refused(path, "is empty; give a path such as src/main.rs"));
    }
    if path.chars().any(char::is_control) {
        return Err(refused(
            path,
            "contains a control character (such as a newline, a tab or NUL)",
        ));
    }
    let bytes = path.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if path.starts_with(['/', '\\']) || drive {
        return Err(refused(
            path,
            "is absolute; give a path relative to the project root, such as src/main.rs",
        ));
    }
    if path.contains('\\') {
        return Err(refused(
            path,
            "contains a backslash; separate directories with /",
        ));
    }
    if path.len() > limits.max_path_bytes {
        return Err(refused(
            path,
            &format!(
                "is {} bytes long, more than the limit of {} bytes",
                path.len(),
                limits.max_path_bytes
            ),
        ));
    }
    for component in path.split('/') {
        let problem = match component {
            "" => "has an empty component (a doubled, leading or trailing /)",
            "." => "has a \".\" component; write the path without it",
            ".." => "has a \"..\" component, which could leave the project directory",
            _ if is_git_dir_name(component) => {
                "writes into \".git\", which belongs to the workspace's own repository"
            }
            _ => continue,
        };
        return Err(refused(path, problem));
    }
    Ok(())
}

/// `.git` in any case, also as file systems that drop trailing dots and spaces see it, and
/// its Windows short name.
fn is_git_dir_name(component: &str) -> bool {
    let trimmed = component.trim_end_matches(['.', ' ']);
    trimmed.eq_ignore_ascii_case(".git") || trimmed.eq_ignore_ascii_case("git~1")
}

fn refused(path: &str, problem: &str) -> WorkspaceError {
    WorkspaceError::Path {
        path: path.to_owned(),
        problem: problem.to_owned(),
    }
}

pub(super) fn io_error(action: &'static str, path: &Path, source: io::Error) -> WorkspaceError {
    WorkspaceError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes sure `path` is a real directory, creating it when missing; a symbolic link (which
/// could lead outside the data directory) or a file is refused.
pub(super) fn ensure_real_dir(path: &Path) -> Result<(), WorkspaceError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create directory", path, e)),
        },
        Err(e) => return Err(io_error("inspect", path, e)),
        Ok(_) => {}
    }
    check_real_dir(path)
}

/// Refuses `path` unless it is a directory and not a symbolic link.
pub(super) fn check_real_dir(path: &Path) -> Result<(), WorkspaceError> {
    let metadata = std::fs::symlink_metadata(path).map_err(|e| io_error("inspect", path, e))?;
    if metadata.file_type().is_symlink() {
        return Err(io_error(
            "use",
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symbolic link, which could lead outside the data directory",
            ),
        ));
    }
    if !metadata.is_dir() {
        return Err(io_error(
            "use",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "it is not a directory"),
        ));
    }
    Ok(())
}

/// Removes the lock files a git process leaves behind when it is killed half-way (the index's,
/// HEAD's and the branches'), and returns their names.
///
/// Only one step of a task runs at a time (the bus hands out one message per key at once, and
/// one process owns a task's partition), so a lock found before a commit starts belongs to a
/// process that died: a worker killed in the middle of a commit. Left there, it would fail
/// every later commit of the task.
pub(super) fn remove_stale_locks(git_dir: &Path) -> Result<Vec<String>, WorkspaceError> {
    let mut candidates = vec![git_dir.join("index.lock"), git_dir.join("HEAD.lock")];
    let heads = git_dir.join("refs").join("heads");
    if let Ok(entries) = std::fs::read_dir(&heads) {
        candidates.extend(
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "lock")),
        );
    }
    let mut removed = Vec::new();
    for lock in candidates {
        match std::fs::remove_file(&lock) {
            Ok(()) => removed.push(lock.display().to_string()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("remove", &lock, error)),
        }
    }
    Ok(removed)
}

/// What [`sync_work_tree`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Synced {
    /// Entries removed: leftovers (files, directories with all they hold, symbolic links) and
    /// files whose content or permissions were not the target's.
    pub(super) removed: usize,
    /// Files written.
    pub(super) written: usize,
    /// Files that already held the target's bytes and were left alone.
    pub(super) kept: usize,
}

/// Makes the work tree `dir` hold exactly `tree` (paths accepted by [`check_files`] and their
/// bytes), all but `.git`, rewriting only what differs.
///
/// Every entry is looked at with `symlink_metadata`, so no symbolic link is followed: a link
/// is removed wherever it is, as is anything that is not a regular file or a directory, a
/// file or directory the tree does not hold, and a file whose size, bytes or permissions
/// (owner read and write, no special bits, and an execute bit exactly when the file is
/// executable, as [`write_new_file`] creates it) are not the target's. A file is compared by its content, not by a remembered time stamp, so
/// whatever a test run did to it since the last call is seen. Missing files are then written
/// with [`write_new_file`].
///
/// The files named in `executable` (mode `100755` in git) are to be executable by their
/// owner: they are kept only when they are, and written so.
pub(super) fn sync_work_tree(
    dir: &Path,
    tree: &[(String, Vec<u8>)],
    executable: &HashSet<String>,
) -> Result<Synced, WorkspaceError> {
    let files: HashMap<&str, &[u8]> = tree
        .iter()
        .map(|(path, content)| (path.as_str(), content.as_slice()))
        .collect();
    let dirs: HashSet<&str> = tree
        .iter()
        .flat_map(|(path, _)| path.match_indices('/').map(|(end, _)| &path[..end]))
        .collect();
    let mut synced = Synced::default();
    let mut kept = HashSet::new();
    let wanted = Wanted {
        files: &files,
        dirs: &dirs,
        executable,
    };
    sync_dir(dir, "", &wanted, &mut kept, &mut synced)?;
    for (path, content) in tree {
        if !kept.contains(path.as_str()) {
            write_new_file(dir, path, content, executable.contains(path))?;
            synced.written += 1;
        }
    }
    synced.kept = kept.len();
    Ok(synced)
}

/// What [`sync_work_tree`] makes the work tree hold: files by path with their bytes, the
/// directories they are in, and which files are executable.
struct Wanted<'a, 'b> {
    files: &'b HashMap<&'a str, &'a [u8]>,
    dirs: &'b HashSet<&'a str>,
    executable: &'b HashSet<String>,
}

/// One directory of [`sync_work_tree`]: `current` is the directory `prefix` (empty for the
/// work tree itself, else ending in `/`) of the tree.
fn sync_dir<'a>(
    current: &Path,
    prefix: &str,
    wanted: &Wanted<'a, '_>,
    kept: &mut HashSet<&'a str>,
    synced: &mut Synced,
) -> Result<(), WorkspaceError> {
    let entries = match std::fs::read_dir(current) {
        Ok(entries) => entries,
        // A test run may have taken away the directory's permissions.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !prefix.is_empty() => {
            make_writable(current);
            std::fs::read_dir(current).map_err(|e| io_error("list", current, e))?
        }
        Err(e) => return Err(io_error("list", current, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", current, e))?;
        let name = entry.file_name();
        if prefix.is_empty() && name == ".git" {
            continue;
        }
        let path = entry.path();
        let metadata =
            std::fs::symlink_metadata(&path).map_err(|e| io_error("inspect", &path, e))?;
        // A name that is not UTF-8 is in no tree: it is removed below.
        let relative = name.to_str().map(|name| format!("{prefix}{name}"));
        if metadata.is_dir() {
            if let Some(relative) = relative.as_deref().filter(|r| wanted.dirs.contains(r)) {
                if !owner_can_use_dir(&metadata) {
                    make_writable(&path);
                }
                sync_dir(&path, &format!("{relative}/"), wanted, kept, synced)?;
                continue;
            }
            remove_dir(&path)?;
        } else {
            let target = relative
                .as_deref()
                .and_then(|r| wanted.files.get_key_value(r))
                .filter(|_| metadata.is_file());
            if let Some((relative, content)) = target
                && holds(
                    &path,
                    &metadata,
                    content,
                    wanted.executable.contains(*relative),
                )
            {
                kept.insert(*relative);
                continue;
            }
            std::fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
        }
        synced.removed += 1;
    }
    Ok(())
}

/// Removes the directory `path` and all it holds, without following links.
fn remove_dir(path: &Path) -> Result<(), WorkspaceError> {
    if let Err(e) = std::fs::remove_dir_all(path) {
        // A test run may have left directories without write permission.
        if e.kind() != io::ErrorKind::PermissionDenied {
            return Err(io_error("remove", path, e));
        }
        make_writable(path);
        std::fs::remove_dir_all(path).map_err(|e| io_error("remove", path, e))?;
    }
    Ok(())
}

/// Whether the regular file `path` (as `metadata` describes it) holds exactly `content`, with
/// the permissions [`write_new_file`] gives a file (`executable` or not).
fn holds(path: &Path, metadata: &std::fs::Metadata, content: &[u8], executable: bool) -> bool {
    use std::io::Read;
    if u64::try_from(content.len()).ok() != Some(metadata.len())
        || !file_mode_is(metadata, executable)
    {
        return false;
    }
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    // The file opened must be the one inspected, not something put in its place since.
    match file.metadata() {
        Ok(opened) if opened.is_file() && same_file(&opened, metadata) => {}
        _ => return false,
    }
    let mut existing = Vec::with_capacity(content.len());
    // One byte more than expected tells a file that grew since it was inspected.
    let limit = u64::try_from(content.len())
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    match (&mut file).take(limit).read_to_end(&mut existing) {
        Ok(_) => existing == content,
        Err(_) => false,
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// Owner read and write, no set-id or sticky bit, and the owner's execute bit only for an
/// `executable` file (no execute bit at all otherwise).
#[cfg(unix)]
fn file_mode_is(metadata: &std::fs::Metadata, executable: bool) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode();
    let plain = mode & 0o600 == 0o600 && mode & 0o7000 == 0;
    plain
        && if executable {
            mode & 0o100 == 0o100
        } else {
            mode & 0o111 == 0
        }
}

#[cfg(not(unix))]
fn file_mode_is(metadata: &std::fs::Metadata, _executable: bool) -> bool {
    !metadata.permissions().readonly()
}

/// The permissions of a file written as executable (git's `100755`).
#[cfg(unix)]
fn make_executable(file: &std::fs::File, path: &Path) -> Result<(), WorkspaceError> {
    use std::os::unix::fs::PermissionsExt;
    // On the open file (fchmod): never through a link put at its path.
    file.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io_error("make executable", path, e))
}

#[cfg(not(unix))]
fn make_executable(_: &std::fs::File, _: &Path) -> Result<(), WorkspaceError> {
    Ok(())
}

/// Whether the owner may list, enter and write the directory.
#[cfg(unix)]
fn owner_can_use_dir(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o700 == 0o700
}

#[cfg(not(unix))]
fn owner_can_use_dir(_: &std::fs::Metadata) -> bool {
    true
}

/// Gives the owner full access to `path` and every directory under it (not through links).
fn make_writable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(metadata) = std::fs::symlink_metadata(path) else {
            return;
        };
        if !metadata.is_dir() {
            return;
        }
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                make_writable(&entry.path());
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Writes a new file `dir/relative` (a path accepted by [`check_files`]), creating its
/// directories, executable by its owner when `executable`. Refuses to go through a symbolic
/// link or to replace an existing file.
pub(super) fn write_new_file(
    dir: &Path,
    relative: &str,
    content: &[u8],
    executable: bool,
) -> Result<(), WorkspaceError> {
    let mut path = dir.to_path_buf();
    let mut components = relative.split('/').peekable();
    while let Some(component) = components.next() {
        path.push(component);
        if components.peek().is_none() {
            break;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(refused(
                    relative,
                    &format!(
                        "goes through the symbolic link {component:?}, which could lead outside the workspace"
                    ),
                ));
            }
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(refused(
                    relative,
                    &format!("needs {component:?} to be a directory, but it is a file"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // `create_dir` does not follow a link planted in the meantime: it fails.
                std::fs::create_dir(&path).map_err(|e| io_error("create directory", &path, e))?;
            }
            Err(e) => return Err(io_error("inspect", &path, e)),
        }
    }
    // `create_new` (O_CREAT | O_EXCL) fails on any existing entry, a symbolic link included.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_error("create", &path, e))?;
    file.write_all(content)
        .map_err(|e| io_error("write", &path, e))?;
    if executable {
        make_executable(&file, &path)?;
    }
    Ok(())
}
