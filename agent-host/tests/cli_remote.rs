//! The command line talks to a running `agent-host run` through its JSON API: `send`,
//! `tasks`, `show` and `replay` reach the host's pipeline and data directory, `WEB_TOKEN` is
//! sent when set, a missing host is named clearly, and Ctrl-C stops the host even while
//! clients follow its events.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::mpsc;

use common::{HELLO, Output, STOP_TIMEOUT, Sandbox, TIMEOUT, read_json, unused_port, wait_bounded};

/// Runs the binary with `args` in `sandbox`, with `env` set.
fn run_with(sandbox: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = sandbox.command(args);
    command.envs(env.iter().copied());
    common::run(command)
}

#[test]
fn send_tasks_show_and_replay_work_on_the_running_host() {
    let host_dir = Sandbox::new();
    let host = host_dir.start_host(&[]);
    let url = host.url.clone();
    // The client runs elsewhere: whatever it shows comes from the host, not from a ./data of
    // its own.
    let client = Sandbox::new();

    let empty = client.run(&["tasks", "--url", &url]);
    assert!(empty.status.success(), "{empty}");
    assert!(
        empty
            .stdout
            .contains(&format!("no tasks yet on the host at {url}")),
        "{empty}"
    );

    let send = client.run(&["send", "--text", HELLO, "--wait", "--url", &url]);
    assert!(send.status.success(), "{send}");
    let task_id = send.task_id();
    for expected in [
        "] received — ",
        "] stage_done design@v1 — Design completed",
        "] stage_done implement@v1 — ",
        "] stage_done test@v1 — Test completed: 1 run, 1 passed, 0 failed",
        "] stage_done review@v1 — ",
        "] gates — Gates passed",
        "] done ",
        "] ci — CI passed on agent/",
    ] {
        assert!(
            send.stdout.contains(expected),
            "missing {expected:?}:\n{send}"
        );
    }
    // The host names its data directory absolutely: the client may run anywhere.
    let host_data = std::fs::canonicalize(host_dir.data_dir()).expect("the host's data directory");
    let host_data = host_data.display();
    assert!(
        send.stdout
            .contains(&format!("artifacts: {host_data}/{task_id}/")),
        "the host's data directory is named:\n{send}"
    );
    let task_dir = host_dir.data_dir().join(&task_id);
    assert!(task_dir.join("review@v1.json").exists(), "{send}");
    assert!(
        !client.data_dir().exists(),
        "the client keeps nothing of its own"
    );

    let tasks = client.run(&["tasks", "--url", &url]);
    assert!(tasks.status.success(), "{tasks}");
    let row = tasks
        .stdout
        .lines()
        .find(|line| line.starts_with(&task_id))
        .unwrap_or_else(|| panic!("the task is listed:\n{tasks}"));
    assert!(row.contains(" done ") && row.contains("review@v1"), "{row}");
    let json = client.run(&["tasks", "--json", "--url", &url]);
    assert!(json.status.success(), "{json}");
    let first: serde_json::Value =
        serde_json::from_str(json.stdout.lines().next().unwrap_or_default()).expect("a JSON line");
    assert_eq!(first["task_id"], task_id.as_str());
    assert_eq!(first["status"], "done");
    assert_eq!(first["attempts"], 4);

    let show = client.run(&["show", &task_id, "--url", &url]);
    assert!(show.status.success(), "{show}");
    assert!(show.stdout.contains(HELLO), "{show}");
    assert!(show.stdout.contains("status   done"), "{show}");
    assert!(show.stdout.contains("design@v1.json"), "{show}");
    let show_json = client.run(&["show", &task_id, "--json", "--url", &url]);
    let document: serde_json::Value =
        serde_json::from_str(&show_json.stdout).expect("show --json prints JSON");
    assert_eq!(document["task"]["status"], "done");
    assert_eq!(document["steps"][3]["artifact"]["approved"], true);

    let replay = client.run(&[
        "replay",
        "--url",
        &url,
        "--task-id",
        &task_id,
        "--step",
        "implement@v1",
        "--reason",
        "try again from afar",
    ]);
    assert!(replay.status.success(), "{replay}");
    assert!(replay.stdout.contains("replayed implement@v1"), "{replay}");
    assert!(
        replay.stdout.contains(&format!(
            "attempt 2: {host_data}/{task_id}/implement@v1.attempt2.json"
        )),
        "the new attempt's file is printed:\n{replay}"
    );
    assert!(
        replay.stdout.contains(&format!(
            "canonical: {host_data}/{task_id}/implement@v1.json"
        )),
        "{replay}"
    );
    let canonical = read_json(&task_dir.join("implement@v1.json"));
    assert_eq!(canonical["attempt"], 2);
    assert_eq!(canonical["replay_reason"], "try again from afar");

    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = client.run(&[
        "replay",
        "--url",
        &url,
        "--task-id",
        &unknown,
        "--step",
        "implement@v1",
    ]);
    assert_eq!(refused.code(), Some(1), "{refused}");
    assert!(
        refused.stderr.contains(&format!(
            "task {unknown} does not exist (no such task on the host at {url})"
        )),
        "{refused}"
    );
    let missing = client.run(&["show", &unknown, "--url", &url]);
    assert_eq!(missing.code(), Some(1), "{missing}");
    assert!(
        missing
            .stderr
            .contains(&format!("task {unknown} does not exist")),
        "{missing}"
    );

    let stopped = host.interrupt();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{:?}\n{}",
        stopped.status,
        stopped.stderr
    );
}

#[test]
fn a_host_with_web_token_wants_it_and_the_client_sends_it() {
    const TOKEN: &str = "s3cret-web-token-4711";
    let host_dir = Sandbox::new();
    let host = host_dir.start_host(&[("WEB_TOKEN", TOKEN)]);
    let url = host.url.clone();
    let client = Sandbox::new();

    let without = client.run(&["tasks", "--url", &url]);
    assert_eq!(without.code(), Some(1), "{without}");
    assert!(
        without
            .stderr
            .contains(&format!("the host at {url} wants WEB_TOKEN")),
        "{without}"
    );
    let wrong = run_with(
        &client,
        &["tasks", "--url", &url],
        &[("WEB_TOKEN", "not-the-token")],
    );
    assert_eq!(wrong.code(), Some(1), "{wrong}");
    assert!(wrong.stderr.contains("WEB_TOKEN"), "{wrong}");

    let token = [("WEB_TOKEN", TOKEN)];
    let send = run_with(&client, &["send", "--text", HELLO, "--url", &url], &token);
    assert!(send.status.success(), "{send}");
    let task_id = send.task_id();
    assert!(send.stdout.contains("] done review@v1 — "), "{send}");
    let tasks = run_with(&client, &["tasks", "--url", &url], &token);
    assert!(tasks.status.success(), "{tasks}");
    assert!(tasks.stdout.contains(&task_id), "{tasks}");

    let banner = host.banner.clone();
    let stopped = host.interrupt();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{}",
        stopped.stderr
    );
    assert!(banner.contains("WEB_TOKEN is set"), "{banner}");
    for (what, text) in [
        (
            "the client's output",
            format!("{without}{wrong}{send}{tasks}"),
        ),
        ("the host's output", format!("{banner}{}", stopped.stdout)),
        ("the host's logs", stopped.stderr.clone()),
    ] {
        assert!(!text.contains(TOKEN), "{what} shows the token:\n{text}");
    }
}

#[test]
fn without_a_host_every_command_says_that_none_is_running() {
    let client = Sandbox::new();
    let port = unused_port();
    let url = format!("http://127.0.0.1:{port}");
    let task_id = uuid::Uuid::new_v4().to_string();
    let expected = format!("no agent-host is running at {url} (start one with `agent-host run`");
    let commands: [&[&str]; 4] = [
        &["send", "--text", HELLO, "--url", &url],
        &["tasks", "--url", &url],
        &["show", &task_id, "--url", &url],
        &[
            "replay",
            "--task-id",
            &task_id,
            "--step",
            "implement@v1",
            "--url",
            &url,
        ],
    ];
    for args in commands {
        let output = client.run(args);
        assert_eq!(output.code(), Some(1), "{args:?}: {output}");
        assert!(output.stderr.contains(&expected), "{args:?}: {output}");
        assert!(output.stderr.contains("--local"), "{args:?}: {output}");
    }

    // Without --url, the host is looked for at WEB_ADDR.
    let addr = format!("127.0.0.1:{port}");
    let default = run_with(&client, &["tasks"], &[("WEB_ADDR", &addr)]);
    assert_eq!(default.code(), Some(1), "{default}");
    assert!(default.stderr.contains(&expected), "{default}");
    assert!(!client.data_dir().exists(), "nothing was run locally");
}

#[cfg(unix)]
#[test]
fn run_stops_on_ctrl_c_while_clients_follow_its_events() {
    let host_dir = Sandbox::new();
    let host = host_dir.start_host(&[]);
    let address = host.url.trim_start_matches("http://").to_owned();

    // A raw client of the event stream, as a browser tab would hold one open.
    let mut raw = TcpStream::connect(&address).expect("the host accepts connections");
    raw.set_read_timeout(Some(TIMEOUT)).expect("a read timeout");
    write!(
        raw,
        "GET /api/events HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("the request is sent");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("event: ready") {
        let n = raw.read(&mut buffer).expect("the stream answers");
        assert!(n > 0, "the stream ended before it was ready");
        received.extend_from_slice(&buffer[..n]);
    }

    // And `send`, following a task on the host.
    let client = Sandbox::new();
    let mut send = client
        .command(&["send", "--text", HELLO, "--wait", "--url", &host.url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("send starts");
    let stdout = send.stdout.take().expect("a piped stdout");
    let mut stderr = send.stderr.take().expect("a piped stderr");
    let (lines, send_lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let following = send_lines
        .recv_timeout(TIMEOUT)
        .is_ok_and(|line| line.starts_with("task "));
    assert!(
        following,
        "send prints the task id once it follows the task"
    );

    let stopped = host.interrupt();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "`run` stops cleanly on Ctrl-C with clients connected: {:?}\n{}",
        stopped.status,
        stopped.stderr
    );
    assert!(
        stopped.stdout.lines().any(|l| l == "stopped"),
        "{}",
        stopped.stdout
    );

    // The raw stream was closed by the host.
    raw.set_read_timeout(Some(STOP_TIMEOUT))
        .expect("a read timeout");
    loop {
        match raw.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("the event stream stayed open after the host stopped: {error}"),
        }
    }

    // `send` ends too, one way or the other, instead of waiting forever.
    let status = wait_bounded(&mut send, TIMEOUT);
    if status.is_none() {
        let _ = send.kill();
        let _ = send.wait();
    }
    let send_stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        panic!("send kept waiting after the host stopped:\n{send_stderr}");
    };
    assert!(
        status.success() || send_stderr.contains("closed its event stream"),
        "send says why it stopped following: {status}\n{send_stderr}"
    );
}
