//! `run` (the default command) serves until Ctrl-C and then stops cleanly.

mod common;

use common::{Host, Sandbox};

#[cfg(unix)]
#[test]
fn run_says_where_data_lives_and_which_model_and_stops_on_ctrl_c() {
    let sandbox = Sandbox::new();
    // No command at all is `run`; port 0 of WEB_ADDR picks a free port, so that tests never
    // collide on 5000.
    let mut command = sandbox.command(&[]);
    command.env("WEB_ADDR", "127.0.0.1:0");
    let host = Host::start(command);

    let banner = &host.banner;
    let data = std::fs::canonicalize(sandbox.data_dir()).expect("the data directory");
    assert!(
        banner.contains(&format!("data:    {}", data.display())),
        "a serving host names its data directory absolutely:\n{banner}"
    );
    assert!(
        banner.contains("offline model (no OPENAI_API_KEY)"),
        "{banner}"
    );
    assert!(banner.contains("127.0.0.1:9092"), "{banner}");
    assert!(
        banner.contains("web:     http://127.0.0.1:")
            && banner.contains("(UI and JSON API under /api)"),
        "the UI's address is printed:\n{banner}"
    );
    assert!(host.url.starts_with("http://127.0.0.1:"), "{}", host.url);
    assert!(
        !host.url.ends_with(":0"),
        "the port actually bound is printed, not 0: {}",
        host.url
    );

    let stopped = host.interrupt();
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "`run` stops cleanly on Ctrl-C: {:?}\n{}",
        stopped.status,
        stopped.stderr
    );
    assert!(
        stopped.stdout.lines().any(|l| l == "stopped"),
        "{}",
        stopped.stdout
    );
}
