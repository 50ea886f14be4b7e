//! B5: `agent-host run` from spawn to ready, its idle memory, and the release binary's size.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::rss::rss_of;

/// The `agent-host` binary built beside this one (`cargo build --release -p agent-host`).
pub(crate) fn agent_host_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let binary = me.with_file_name("agent-host");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --release -p agent-host` (scripts/perf does)",
            binary.display()
        ))
    }
}

/// A free port on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

/// The status code of `GET path` on 127.0.0.1:`port`, or `None` when nothing answers.
pub(crate) async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Starts `agent-host run` on an empty data directory `runs` times: the median time to the
/// first `200` of `/readyz`, the resident memory two seconds after, and the binary's size.
pub(crate) async fn startup(runs: usize) -> Result<Value, String> {
    let binary = agent_host_binary()?;
    let mut ready_ms = Vec::new();
    let mut idle_rss = Vec::new();
    for _ in 0..runs {
        let dir = crate::scratch_dir()?;
        let (ready, rss) = start_once(&binary, &dir).await?;
        ready_ms.push(ready.as_secs_f64() * 1000.0);
        idle_rss.push(rss as f64 / 1048576.0);
    }
    let size = std::fs::metadata(&binary)
        .map_err(|e| format!("{}: {e}", binary.display()))?
        .len();
    Ok(json!({
        "runs": runs,
        "ready_ms_median": median(&mut ready_ms),
        "ready_ms_max": ready_ms.iter().copied().fold(0.0, f64::max),
        "idle_rss_mb_median": median(&mut idle_rss),
        "binary_mb": size as f64 / 1048576.0,
    }))
}

async fn start_once(binary: &Path, data_dir: &Path) -> Result<(Duration, u64), String> {
    let port = free_port()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATA_DIR", data_dir)
        .env("WEB_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .current_dir(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let pid = child.id().ok_or("agent-host exited at once")?;
    let ready = loop {
        if http_status(port, "/readyz").await == Some(200) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("agent-host was not ready within 30 s".to_owned());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "agent-host exited with {status} before it was ready"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_of(pid).ok_or("no /proc/<pid>/status")?;
    let _ = child.kill().await;
    Ok((ready, rss))
}

/// The median of `values` (which it sorts); zero when empty.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
