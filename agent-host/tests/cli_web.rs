//! `agent-host web`: the UI and API alone over a data directory; on the embedded default it
//! shows everything and refuses work, saying why.

mod common;

use common::{Host, Sandbox};

#[test]
fn web_alone_serves_the_data_directory_and_refuses_work_with_the_reason() {
    let sandbox = Sandbox::new();
    let (task_id, _) = sandbox.send_hello();

    let host = Host::start(sandbox.command(&["web", "--listen", "127.0.0.1:0"]));
    assert!(
        host.banner.contains("read-only"),
        "the banner says enqueue is off:\n{}",
        host.banner
    );

    // The command line reads what is there through the API of that process.
    let client = Sandbox::new();
    let tasks = client.run(&["tasks", "--url", &host.url]);
    assert_eq!(tasks.code(), Some(0), "{tasks}");
    assert!(tasks.stdout.contains(&task_id), "{tasks}");
    assert!(tasks.stdout.contains("done"), "{tasks}");
    let show = client.run(&["show", &task_id, "--url", &host.url]);
    assert_eq!(show.code(), Some(0), "{show}");
    assert!(show.stdout.contains("review@v1"), "{show}");

    // Work is refused with the reason, not lost in a bus no service reads.
    let send = client.run(&["send", "--text", "Write hello", "--url", &host.url]);
    assert_eq!(send.code(), Some(1), "{send}");
    assert!(
        send.stderr.contains("agent-host run"),
        "the refusal says where work is taken:\n{send}"
    );
    let replay = client.run(&[
        "replay",
        "--task-id",
        &task_id,
        "--step",
        "implement@v1",
        "--url",
        &host.url,
    ]);
    assert_eq!(replay.code(), Some(1), "{replay}");
    assert!(replay.stderr.contains("agent-host run"), "{replay}");
    assert!(
        !sandbox
            .data_dir()
            .join(&task_id)
            .join("implement@v1.attempt2.json")
            .exists(),
        "nothing ran"
    );

    let stopped = host.interrupt();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "web stops cleanly on Ctrl-C: {}",
        stopped.stderr
    );
}
