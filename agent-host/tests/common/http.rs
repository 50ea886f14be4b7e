//! Plain HTTP/1.1 requests to a running host, without a client library: what a script or a
//! scraper would send.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::TIMEOUT;

/// One HTTP answer.
pub(crate) struct Answer {
    /// The status code.
    pub(crate) status: u16,
    /// The header lines, lowercased.
    pub(crate) headers: String,
    /// The body (a JSON body is sent whole, with its length).
    pub(crate) body: String,
}

impl Answer {
    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// `method path` on `base` (`http://host:port`), with a bearer token and a JSON body if given.
pub(crate) fn request(
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&serde_json::Value>,
) -> Answer {
    request_with(base, method, path, bearer, json, &[])
}

/// As [`request`], with more header lines (`("If-None-Match", "\"…\"")`).
pub(crate) fn request_with(
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let authority = base
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {base}"));
    let mut stream = TcpStream::connect(authority).expect("the server accepts connections");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("a read timeout");
    let authorization = bearer
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let authorization: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .fold(authorization, |all, line| all + &line);
    let body = json.map(|value| value.to_string()).unwrap_or_default();
    let content = if json.is_some() {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        "Content-Length: 0\r\n".to_owned()
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{authorization}{content}Connection: close\r\n\r\n{body}"
    )
    .expect("the request is sent");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("the answer is read");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// `GET path` on `base`.
pub(crate) fn get(base: &str, path: &str) -> Answer {
    request(base, "GET", path, None, None)
}

/// The status of task `task_id` on the host at `base` (`None` while it is not recorded).
pub(crate) fn task_status(base: &str, task_id: &str) -> Option<String> {
    let answer = get(base, &format!("/api/task/{task_id}"));
    (answer.status == 200)
        .then(|| answer.json()["task"]["status"].as_str().map(str::to_owned))
        .flatten()
}

/// Waits until task `task_id` on the host at `base` has `status`, at most
/// [`TIMEOUT`]; fails the test with the status it had otherwise.
pub(crate) fn wait_for_status(base: &str, task_id: &str, status: &str) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        last = task_status(base, task_id);
        if last.as_deref() == Some(status) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("task {task_id} is still {last:?} after {TIMEOUT:?}, not {status}");
}
