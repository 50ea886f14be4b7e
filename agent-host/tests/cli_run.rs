//! `run` (the default command) serves until Ctrl-C and then stops cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{Sandbox, TIMEOUT, wait_bounded};

#[cfg(unix)]
#[test]
fn run_says_where_data_lives_and_which_model_and_stops_on_ctrl_c() {
    let sandbox = Sandbox::new();
    let mut child = sandbox
        .command(&[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("a piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let mut banner = Vec::new();
    while let Ok(line) = received.recv_timeout(TIMEOUT) {
        let ready = line.starts_with("Press Ctrl-C");
        banner.push(line);
        if ready {
            break;
        }
    }
    let banner = banner.join("\n");
    if !banner.contains("Press Ctrl-C") {
        let _ = child.kill();
        panic!("`run` did not start:\n{banner}");
    }
    assert!(banner.contains("data:    ./data"), "{banner}");
    assert!(
        banner.contains("offline model (no OPENAI_API_KEY)"),
        "{banner}"
    );
    assert!(banner.contains("127.0.0.1:9092"), "{banner}");
    assert!(banner.contains("UI issue"), "{banner}");

    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "`run` stops cleanly on Ctrl-C: {status:?}"
    );
    let rest: Vec<String> = received.try_iter().collect();
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
}
