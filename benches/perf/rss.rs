//! Memory use of this process, from `/proc/self/status` (Linux).

/// The peak resident set size so far (`VmHWM`), in bytes; `None` where `/proc` is missing.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    status_field("VmHWM:")
}

fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
