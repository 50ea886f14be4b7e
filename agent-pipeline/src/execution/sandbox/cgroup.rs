//! A pids cgroup for each run: the kernel refuses a fork past the run's process limit
//! whoever runs it (root included, which `RLIMIT_NPROC` does not bind), and every process of
//! the run can be found and killed when it ends, even one that left its process group.
//!
//! The cgroup is made under the host's own pids cgroup: in the cgroup v1 `pids` hierarchy,
//! or in the unified (v2) hierarchy when `pids` is enabled for the children of the host's
//! cgroup (`cgroup.subtree_control`). Its name is `agent-pipeline-<host pid>-<n>`, so the
//! cgroups of a host that died can be told apart and are removed by the next one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// The name of every cgroup made here starts with this, then `<host pid>-<n>`.
const PREFIX: &str = "agent-pipeline-";

/// How long the processes of a run may take to die and leave before its cgroup is given up.
const DISPOSE_WITHIN: Duration = Duration::from_secs(5);

/// The pause between two sweeps of kills (a process may fork while it is being killed).
const KILL_PAUSE: Duration = Duration::from_millis(1);

/// Numbers the cgroups of this process.
static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

/// The cgroup of one run. Dropping it kills what is left in it and removes it (on a thread
/// of its own, so that a drop never blocks the runtime).
#[derive(Debug)]
pub(super) struct RunCgroup {
    dir: PathBuf,
    max_processes: u32,
    disposed: bool,
}

impl RunCgroup {
    /// Makes a cgroup that allows at most `max_processes` processes and threads at once, or
    /// says why it cannot.
    pub(super) fn create(max_processes: u32) -> Result<Self, String> {
        let parent = parent_dir()?;
        sweep_dead_hosts(&parent);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT_RUN.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        fs::create_dir(&dir).map_err(|e| format!("cannot create the cgroup {dir:?}: {e}"))?;
        let cgroup = Self {
            dir,
            max_processes,
            disposed: false,
        };
        fs::write(cgroup.dir.join("pids.max"), max_processes.to_string())
            .map_err(|e| format!("cannot set pids.max in {:?}: {e}", cgroup.dir))?;
        Ok(cgroup)
    }

    /// The file a process writes its pid to, to enter the cgroup with its future children.
    pub(super) fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The process limit.
    pub(super) fn max_processes(&self) -> u32 {
        self.max_processes
    }

    /// How many forks the limit refused so far (the `max` count of `pids.events`).
    pub(super) fn refused_forks(&self) -> u64 {
        fs::read_to_string(self.dir.join("pids.events"))
            .ok()
            .and_then(|events| refused_forks(&events))
            .unwrap_or(0)
    }

    /// Kills every process in the cgroup now (one sweep: one that is being born may be
    /// missed, see [`RunCgroup::dispose`]).
    pub(super) fn kill_all(&self) {
        for pid in pids_in(&self.dir).unwrap_or_default() {
            // It fails for a process that is already gone.
            let _gone = kill_process(pid, Signal::KILL);
        }
    }

    /// Kills every process left in the cgroup, until none is left, and removes it.
    pub(super) async fn dispose(mut self) {
        self.disposed = true;
        let dir = self.dir.clone();
        let removal = tokio::task::spawn_blocking(move || kill_and_remove(&dir, DISPOSE_WITHIN));
        if let Err(error) = removal.await {
            tracing::warn!(%error, "the cgroup removal did not finish");
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if self.disposed {
            return;
        }
        let dir = self.dir.clone();
        std::thread::spawn(move || kill_and_remove(&dir, DISPOSE_WITHIN));
    }
}

/// Kills what is in the cgroup at `dir` until it is empty, then removes it, trying for
/// `patience` at most (at least once); logs what it could not do.
fn kill_and_remove(dir: &Path, patience: Duration) {
    let started = Instant::now();
    let mut killed = 0_usize;
    loop {
        let pids = match pids_in(dir) {
            Ok(pids) => pids,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return,
            Err(error) => {
                tracing::warn!(cgroup = %dir.display(), %error, "cannot read the cgroup's processes");
                return;
            }
        };
        if pids.is_empty() {
            match fs::remove_dir(dir) {
                Ok(()) => {
                    tracing::debug!(cgroup = %dir.display(), killed, "cgroup removed");
                    return;
                }
                // Emptied but not yet released by the kernel (a process still being reaped).
                Err(error) if started.elapsed() >= patience => {
                    tracing::warn!(cgroup = %dir.display(), %error, "cannot remove the cgroup");
                    return;
                }
                Err(_) => {}
            }
        } else {
            let left = pids.len();
            for pid in pids {
                if kill_process(pid, Signal::KILL).is_ok() {
                    killed += 1;
                }
            }
            if started.elapsed() >= patience {
                tracing::warn!(
                    cgroup = %dir.display(),
                    left,
                    "processes of a run were still there at the end; the cgroup is left"
                );
                return;
            }
        }
        std::thread::sleep(KILL_PAUSE);
    }
}

/// The processes in the cgroup at `dir`.
fn pids_in(dir: &Path) -> io::Result<Vec<Pid>> {
    let procs = fs::read_to_string(dir.join("cgroup.procs"))?;
    Ok(procs
        .lines()
        .filter_map(|pid| pid.trim().parse().ok())
        .filter_map(Pid::from_raw)
        .collect())
}

/// Removes the cgroups left by hosts that no longer run (their pid is gone).
fn sweep_dead_hosts(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(host) = name.to_str().and_then(host_pid) else {
            continue;
        };
        if !Path::new("/proc").join(host.to_string()).exists() {
            tracing::info!(cgroup = %entry.path().display(), "removing the cgroup of a host that is gone");
            // One try: what is not gone yet is for the next run to remove.
            kill_and_remove(&entry.path(), Duration::ZERO);
        }
    }
}

/// The host pid in the name of a cgroup made here (`agent-pipeline-<pid>-<n>`).
fn host_pid(name: &str) -> Option<u32> {
    let (pid, run) = name.strip_prefix(PREFIX)?.split_once('-')?;
    run.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// The `max` count of a `pids.events` file.
fn refused_forks(events: &str) -> Option<u64> {
    events
        .lines()
        .find_map(|line| line.strip_prefix("max "))
        .and_then(|count| count.trim().parse().ok())
}

/// The host's own pids cgroup, where the runs' cgroups are made.
fn parent_dir() -> Result<PathBuf, String> {
    let membership = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    match locate(&membership, &mounts) {
        Some(Hierarchy::V1(dir)) => Ok(dir),
        Some(Hierarchy::Unified(dir)) => {
            let enabled = |dir: &Path| {
                fs::read_to_string(dir.join("cgroup.subtree_control"))
                    .is_ok_and(|controllers| has_word(&controllers, ' ', "pids"))
            };
            if enabled(&dir) || fs::write(dir.join("cgroup.subtree_control"), "+pids").is_ok() {
                Ok(dir)
            } else {
                Err(format!(
                    "the pids controller is not enabled for the children of the host's cgroup \
                     {dir:?} (cgroup v2: run the host in a cgroup of its own with `pids` in \
                     cgroup.subtree_control, e.g. a systemd unit with Delegate=pids)"
                ))
            }
        }
        None => Err("no pids cgroup controller is mounted".to_owned()),
    }
}

/// Where the host's pids cgroup is.
#[derive(Debug, PartialEq, Eq)]
enum Hierarchy {
    /// In the cgroup v1 `pids` hierarchy.
    V1(PathBuf),
    /// In the unified (v2) hierarchy, which offers the `pids` controller.
    Unified(PathBuf),
}

/// The host's pids cgroup from `/proc/self/cgroup` (`membership`) and
/// `/proc/self/mountinfo` (`mounts`): the v1 `pids` hierarchy if it is mounted, else the
/// unified hierarchy if its cgroup offers `pids`.
fn locate(membership: &str, mounts: &str) -> Option<Hierarchy> {
    let memberships: Vec<(&str, &str)> = membership
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _id = fields.next()?;
            Some((fields.next()?, fields.next()?))
        })
        .collect();
    let mounts: Vec<Mount> = mounts.lines().filter_map(Mount::parse).collect();

    let v1 = memberships
        .iter()
        .find(|(controllers, _)| has_word(controllers, ',', "pids"))
        .and_then(|(_, path)| {
            let mount = mounts
                .iter()
                .find(|mount| mount.fs_type == "cgroup" && has_word(mount.options, ',', "pids"))?;
            Some(Hierarchy::V1(mount.dir_of(path)))
        });
    v1.or_else(|| {
        let (_, path) = memberships
            .iter()
            .find(|(controllers, _)| controllers.is_empty())?;
        let mount = mounts.iter().find(|mount| mount.fs_type == "cgroup2")?;
        let dir = mount.dir_of(path);
        fs::read_to_string(dir.join("cgroup.controllers"))
            .is_ok_and(|controllers| has_word(&controllers, ' ', "pids"))
            .then_some(Hierarchy::Unified(dir))
    })
}

/// Whether `list`, separated by `separator`, has `word`.
fn has_word(list: &str, separator: char, word: &str) -> bool {
    list.trim().split(separator).any(|item| item == word)
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug)]
struct Mount<'a> {
    /// The directory of the filesystem mounted (for a cgroup, the cgroup at the mount point).
    root: &'a str,
    mount_point: &'a str,
    fs_type: &'a str,
    /// The filesystem's own options (for cgroup v1, its controllers).
    options: &'a str,
}

impl<'a> Mount<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().position(|field| *field == "-")?;
        Some(Self {
            root: fields.get(3)?,
            mount_point: fields.get(4)?,
            fs_type: fields.get(separator + 1)?,
            options: fields.get(separator + 3)?,
        })
    }

    /// The directory of cgroup `path` (as `/proc/self/cgroup` names it) under this mount.
    fn dir_of(&self, path: &str) -> PathBuf {
        let inside = Path::new(path)
            .strip_prefix(self.root)
            .unwrap_or_else(|_| Path::new(path));
        let inside = inside.strip_prefix("/").unwrap_or(inside);
        Path::new(self.mount_point).join(inside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/api/x\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
46 45 0:40 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
50 45 0:44 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
52 45 0:46 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_v1_pids_hierarchy_comes_first() {
        assert_eq!(
            locate(HYBRID, HYBRID_MOUNTS),
            Some(Hierarchy::V1(PathBuf::from("/sys/fs/cgroup/pids")))
        );
        let nested = "3:cpu,pids:/docker/abc\n";
        let mounts = "50 45 0:44 /docker /sys/fs/cgroup/pids rw - cgroup cgroup rw,cpu,pids\n";
        assert_eq!(
            locate(nested, mounts),
            Some(Hierarchy::V1(PathBuf::from("/sys/fs/cgroup/pids/abc")))
        );
    }

    #[test]
    fn without_a_pids_controller_there_is_nothing() {
        let membership = "4:memory:/\n";
        let mounts = "46 45 0:40 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(locate(membership, mounts), None);
        assert_eq!(locate("", ""), None);
    }

    #[test]
    fn names_and_events_are_read() {
        assert_eq!(host_pid("agent-pipeline-4242-7"), Some(4242));
        assert_eq!(host_pid("agent-pipeline-4242"), None);
        assert_eq!(host_pid("other-4242-7"), None);
        assert_eq!(refused_forks("max 17\n"), Some(17));
        assert_eq!(refused_forks("max.imposed 0\nmax 3\n"), Some(3));
        assert_eq!(refused_forks(""), None);
    }

    #[test]
    fn mount_lines_with_optional_fields_parse() {
        let line = "36 35 98:0 / /sys/fs/cgroup rw,nosuid shared:9 master:1 - cgroup2 cgroup2 rw,nsdelegate";
        let mount = Mount::parse(line).unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(mount.fs_type, "cgroup2");
        assert_eq!(
            mount.dir_of("/user.slice/a.scope"),
            PathBuf::from("/sys/fs/cgroup/user.slice/a.scope")
        );
    }
}
