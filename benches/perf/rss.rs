//! Memory use of a process, from `/proc/<pid>/status` (Linux).

/// The peak resident set size of this process so far (`VmHWM`), in bytes; `None` where
/// `/proc` is missing.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    status_field("self", "VmHWM:")
}

/// The resident set size of process `pid` now (`VmRSS`), in bytes.
pub(crate) fn rss_of(pid: u32) -> Option<u64> {
    status_field(&pid.to_string(), "VmRSS:")
}

fn status_field(process: &str, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
