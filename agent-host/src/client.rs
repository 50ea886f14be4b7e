//! The HTTP client of the command line: `send`, `replay`, `approve`, `reject`, `cancel`,
//! `tasks` and `show` reach a running `agent-host run` through its JSON API (see
//! `docs/web.md`).
//!
//! On the embedded default the bus lives inside the `run` process, so another process can
//! only hand it work through the API. Every failure says what to do about it: no host at the
//! URL, a host that wants `WEB_TOKEN`, or the host's own `{"error": …}` message.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use agent_pipeline::TaskId;
use agent_pipeline::wire::{ControlAction, NewTask, ReportEvent};
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::views::{TaskDetails, TaskSummary};
use crate::web::{
    ControlQueued, ControlRequest, EnqueueRequest, Enqueued, ReplayQueued, ReplayRequest,
};

/// How long connecting to the host may take: it normally runs on this machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request and its answer may take (the event stream excepted, which stays open).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest line or event the event stream may send; report events are far smaller, so a
/// longer one means that the URL is not an agent-host.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Why talking to the host failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ClientError {
    /// `--url` is not an `http://` or `https://` URL.
    #[error("invalid --url {url:?}: {why}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// Nothing answers at the URL.
    #[error(
        "no agent-host is running at {url} (start one with `agent-host run`, or pass --local to work in this process)"
    )]
    NoHost {
        /// The host's URL.
        url: String,
    },
    /// The host wants `WEB_TOKEN`, and this command sent none or another one.
    #[error("the host at {url} wants WEB_TOKEN ({hint})")]
    Unauthorized {
        /// The host's URL.
        url: String,
        /// What to do.
        hint: &'static str,
    },
    /// The host cannot take work (a read-only `agent-host web`, or its bus is down).
    #[error("the host at {url} cannot do this now: {message}")]
    Unavailable {
        /// The host's URL.
        url: String,
        /// The host's reason.
        message: String,
    },
    /// The host refused the request with this status and message.
    #[error("the host at {url} answered {status}: {message}")]
    Refused {
        /// The host's URL.
        url: String,
        /// The status code.
        status: StatusCode,
        /// The host's `{"error": …}` message (or the start of its answer).
        message: String,
    },
    /// The request could not be sent, or the answer not read.
    #[error("cannot talk to the host at {url}")]
    Http {
        /// The host's URL.
        url: String,
        /// The transport's error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not what the API sends.
    #[error("the host at {url} sent an answer this command does not understand: {why}")]
    Protocol {
        /// The host's URL.
        url: String,
        /// What was wrong with it.
        why: String,
    },
    /// The event stream went faster than this command read it, and events were lost.
    #[error(
        "this command fell behind the host's events and missed {missed} of them; \
         `agent-host show <task_id>` says where the task stands"
    )]
    Lagged {
        /// How many events were missed.
        missed: u64,
    },
}

impl ClientError {
    /// The status the host answered with, when it answered with an error.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            ClientError::Unavailable { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
            ClientError::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            _ => None,
        }
    }

    /// The host's own message of a refusal.
    pub(crate) fn host_message(&self) -> Option<&str> {
        match self {
            ClientError::Refused { message, .. } | ClientError::Unavailable { message, .. } => {
                Some(message)
            }
            _ => None,
        }
    }
}

/// The result of a call to the host.
pub(crate) type ClientResult<T> = Result<T, ClientError>;

/// The API of one running host.
#[derive(Clone)]
pub(crate) struct HostClient {
    /// The HTTP client.
    http: reqwest::Client,
    /// The host's URL, without a trailing `/` (e.g. `http://127.0.0.1:5000`).
    base: String,
    /// `WEB_TOKEN`, sent as a bearer token when set.
    token: Option<String>,
}

impl fmt::Debug for HostClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// `GET /api/tasks`.
#[derive(Debug, Deserialize)]
struct TaskList {
    /// Every task, newest first.
    tasks: Vec<TaskSummary>,
}

/// An error answer of the API.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    /// What went wrong.
    error: String,
}

impl HostClient {
    /// The client of the host at `url` (`--url`), else at `http://` and `WEB_ADDR`; it sends
    /// `WEB_TOKEN` when the configuration has one.
    pub(crate) fn new(config: &Config, url: Option<&str>) -> ClientResult<Self> {
        let given = url.map_or_else(|| config.web.local_url(), |u| u.trim().to_owned());
        let invalid = |why: String| ClientError::InvalidUrl {
            url: given.clone(),
            why,
        };
        let parsed = reqwest::Url::parse(&given).map_err(|e| invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid("it must start with http:// or https://".into()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid(
                "it names the host (and a path prefix), without ? or #".into(),
            ));
        }
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        // A host on this machine is reached directly, whatever proxy the environment names
        // for the outside world.
        if is_loopback(&parsed) {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|source| ClientError::Http {
            url: given.clone(),
            source,
        })?;
        Ok(Self {
            http,
            base: given.trim_end_matches('/').to_owned(),
            token: config.web.token.clone(),
        })
    }

    /// The host's URL, as the messages show it.
    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    /// The page of a task in the UI.
    pub(crate) fn task_page(&self, task_id: TaskId) -> String {
        format!("{}/task/{task_id}", self.base)
    }

    /// `POST /api/tasks`: enqueues `task` (the host gives it an id of its own; the prompt,
    /// the budget, the approval requirement and the repository are sent).
    pub(crate) async fn enqueue(&self, task: &NewTask) -> ClientResult<Enqueued> {
        let body = EnqueueRequest {
            prompt: task.prompt.clone(),
            budget: task.budget,
            require_approval: task.require_approval,
            repository: task.repository.clone(),
        };
        let request = self
            .request(reqwest::Method::POST, "/api/tasks")
            .json(&body);
        self.json(request).await
    }

    /// `POST /api/task/{id}/replay`: asks for the replay `body` describes.
    pub(crate) async fn replay(
        &self,
        task_id: TaskId,
        body: &ReplayRequest,
    ) -> ClientResult<ReplayQueued> {
        let path = format!("/api/task/{task_id}/replay");
        let request = self.request(reqwest::Method::POST, &path).json(body);
        self.json(request).await
    }

    /// `POST /api/task/{id}/approve` (or `reject`, `cancel`): sends a decision about the
    /// task, which the host checks first (409 when it does not apply).
    pub(crate) async fn control(
        &self,
        task_id: TaskId,
        action: ControlAction,
        body: &ControlRequest,
    ) -> ClientResult<ControlQueued> {
        let path = format!("/api/task/{task_id}/{}", action.as_str());
        let request = self.request(reqwest::Method::POST, &path).json(body);
        self.json(request).await
    }

    /// `GET /api/tasks`: every task, newest first.
    pub(crate) async fn tasks(&self) -> ClientResult<Vec<TaskSummary>> {
        let request = self.request(reqwest::Method::GET, "/api/tasks");
        Ok(self.json::<TaskList>(request).await?.tasks)
    }

    /// `GET /api/task/{id}`: one task with its steps.
    pub(crate) async fn task(&self, task_id: TaskId) -> ClientResult<TaskDetails> {
        let path = format!("/api/task/{task_id}");
        self.json(self.request(reqwest::Method::GET, &path)).await
    }

    /// `GET /api/events[?task_id=]`: returns once the host said `ready`, so that every report
    /// event from then on comes through the stream.
    pub(crate) async fn events(&self, task_id: Option<TaskId>) -> ClientResult<EventStream> {
        let path = match task_id {
            Some(task_id) => format!("/api/events?task_id={task_id}"),
            None => "/api/events".to_owned(),
        };
        let request = self
            .authorized(self.http.get(format!("{}{path}", self.base)))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = self.check(request.send().await).await?;
        let mut stream = EventStream {
            response,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            url: self.base.clone(),
        };
        loop {
            match stream.next_sse().await? {
                Some(event) if event.event == "ready" => return Ok(stream),
                Some(_) => continue,
                None => {
                    return Err(ClientError::Protocol {
                        url: self.base.clone(),
                        why: "the event stream ended before it was ready".into(),
                    });
                }
            }
        }
    }

    /// A request to `path` of the host, with the token and a time limit.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(REQUEST_TIMEOUT);
        self.authorized(request)
    }

    /// Adds `Authorization: Bearer <WEB_TOKEN>` when a token is configured.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            // `bearer_auth` marks the header sensitive, so that it is never logged.
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` and reads its JSON answer.
    async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> ClientResult<T> {
        let response = self.check(request.send().await).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url: self.base.clone(),
            why: format!("not the API's JSON ({e})"),
        })
    }

    /// The response when it is a success, else the error it stands for.
    async fn check(
        &self,
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> ClientResult<reqwest::Response> {
        let response = sent.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let url = self.base.clone();
        if status == StatusCode::UNAUTHORIZED {
            let hint = if self.token.is_some() {
                "the WEB_TOKEN sent is not its token: set WEB_TOKEN to the host's token"
            } else {
                "set WEB_TOKEN to its token"
            };
            return Err(ClientError::Unauthorized { url, hint });
        }
        let text = response.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => body.error,
            Err(_) => format!(
                "{} (not the API's JSON: is this an agent-host?)",
                crate::commands::one_line(&text, 200)
            ),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(ClientError::Unavailable { url, message });
        }
        Err(ClientError::Refused {
            url,
            status,
            message,
        })
    }

    /// The error of a request that got no answer.
    fn transport(&self, error: reqwest::Error) -> ClientError {
        transport_error(&self.base, error)
    }
}

/// A connection that could not be made means that no host runs there; anything else is a
/// failure of the conversation.
fn transport_error(url: &str, error: reqwest::Error) -> ClientError {
    if error.is_connect() {
        ClientError::NoHost {
            url: url.to_owned(),
        }
    } else {
        ClientError::Http {
            url: url.to_owned(),
            source: error,
        }
    }
}

/// Whether `url` names this machine.
fn is_loopback(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// The report events of a running host, from the moment its stream said `ready`.
#[derive(Debug)]
pub(crate) struct EventStream {
    /// The open `GET /api/events`.
    response: reqwest::Response,
    /// Turns the body's bytes into events.
    parser: SseParser,
    /// Events parsed and not handed out yet.
    pending: VecDeque<SseEvent>,
    /// The host's URL, for messages.
    url: String,
}

impl EventStream {
    /// The next report event; `None` when the host closed the stream (it is stopping).
    pub(crate) async fn next(&mut self) -> ClientResult<Option<ReportEvent>> {
        loop {
            let Some(event) = self.next_sse().await? else {
                return Ok(None);
            };
            match event.event.as_str() {
                "report" => {
                    return serde_json::from_str(&event.data).map(Some).map_err(|e| {
                        ClientError::Protocol {
                            url: self.url.clone(),
                            why: format!("a report event that is not a report ({e})"),
                        }
                    });
                }
                "lagged" => {
                    return Err(ClientError::Lagged {
                        missed: event.data.trim().parse().unwrap_or(0),
                    });
                }
                // `ready` again, or an event kind of a later version: nothing to report.
                _ => continue,
            }
        }
    }

    /// The next server-sent event of any kind; `None` at the end of the stream.
    async fn next_sse(&mut self) -> ClientResult<Option<SseEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|e| transport_error(&self.url, e))?;
            let Some(bytes) = chunk else {
                return Ok(None);
            };
            let events = self
                .parser
                .feed(&bytes)
                .map_err(|why| ClientError::Protocol {
                    url: self.url.clone(),
                    why,
                })?;
            self.pending.extend(events);
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// Its `event:` field (`message` when it has none).
    pub(crate) event: String,
    /// Its `data:` lines, joined by line breaks.
    pub(crate) data: String,
}

/// Reads server-sent events (the `text/event-stream` format of the HTML standard) from the
/// chunks of a body, which may split lines anywhere.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The line read so far.
    line: Vec<u8>,
    /// Whether the last byte ended a line with `\r`, so that a `\n` right after belongs to it.
    after_cr: bool,
    /// The `event:` field of the event read so far.
    event: Option<String>,
    /// The `data:` lines of the event read so far.
    data: Option<String>,
}

impl SseParser {
    /// Takes the next bytes of the body; returns the events they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut events = Vec::new();
        for &byte in bytes {
            let after_cr = std::mem::take(&mut self.after_cr);
            match byte {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    events.extend(self.on_line(&line));
                }
                _ => {
                    self.line.push(byte);
                    let pending = self.data.as_ref().map_or(0, String::len);
                    if self.line.len() + pending > MAX_EVENT_BYTES {
                        return Err(format!("an event longer than {MAX_EVENT_BYTES} bytes"));
                    }
                }
            }
        }
        Ok(events)
    }

    /// Handles one whole line; an empty one ends the event.
    fn on_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            // An event without data is not dispatched, as the standard says.
            let data = self.data.take()?;
            return Some(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None; // A comment: the keep-alive.
        }
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // `id` and `retry` matter to browsers that reconnect; this client does not.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_are_read_whole_whatever_the_chunks() -> Result<(), String> {
        let stream = b"event: ready\ndata: {}\n\n:\n\nevent: report\ndata: {\"a\":1}\n\n";
        let expected = vec![event("ready", "{}"), event("report", "{\"a\":1}")];
        let mut parser = SseParser::default();
        assert_eq!(parser.feed(stream)?, expected);
        for split in 1..stream.len() {
            let mut parser = SseParser::default();
            let mut events = parser.feed(&stream[..split])?;
            events.extend(parser.feed(&stream[split..])?);
            assert_eq!(events, expected, "split at {split}");
        }
        Ok(())
    }

    #[test]
    fn comments_are_skipped_and_data_lines_are_joined() -> Result<(), String> {
        let mut parser = SseParser::default();
        let events = parser.feed(b": keep-alive\n\ndata: one\ndata:two\nid: 7\n\nevent: x\n\n")?;
        // The last event has no data: it is not dispatched.
        assert_eq!(events, vec![event("message", "one\ntwo")]);
        Ok(())
    }

    #[test]
    fn every_line_ending_of_the_standard_ends_a_line() -> Result<(), String> {
        let mut parser = SseParser::default();
        let mut events = parser.feed(b"event: a\r\ndata: 1\r")?;
        events.extend(parser.feed(b"\n\r\nevent: b\rdata: 2\r\r")?);
        assert_eq!(events, vec![event("a", "1"), event("b", "2")]);
        Ok(())
    }

    #[test]
    fn a_multibyte_character_split_across_chunks_survives() -> Result<(), String> {
        let bytes = "data: Grüße\n\n".as_bytes();
        let mut parser = SseParser::default();
        let mut events = parser.feed(&bytes[..9])?;
        events.extend(parser.feed(&bytes[9..])?);
        assert_eq!(events, vec![event("message", "Grüße")]);
        Ok(())
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::default();
        let endless = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(parser.feed(&endless).is_err());
    }

    fn config(token: Option<&str>) -> anyhow::Result<Config> {
        // The binary installs ring at start-up; the tests do as the binary would.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let lookup = |key: &str| {
            (key == "WEB_TOKEN")
                .then(|| token.map(str::to_owned))
                .flatten()
        };
        Config::resolve(&lookup, None, &crate::config::Flags::default())
    }

    #[test]
    fn the_url_defaults_to_web_addr_and_the_token_stays_hidden() -> anyhow::Result<()> {
        let client = HostClient::new(&config(Some("s3cret-token"))?, None)?;
        assert_eq!(client.url(), "http://127.0.0.1:5000");
        assert!(!format!("{client:?}").contains("s3cret-token"));
        let client = HostClient::new(&config(None)?, Some("http://example.test:8080/"))?;
        assert_eq!(client.url(), "http://example.test:8080");
        let task_id = TaskId::new();
        assert_eq!(
            client.task_page(task_id),
            format!("http://example.test:8080/task/{task_id}")
        );
        for bad in ["localhost:5000", "ftp://host", "http://host/?a=1"] {
            let error = HostClient::new(&config(None)?, Some(bad)).map(|_| ());
            assert!(
                matches!(error, Err(ClientError::InvalidUrl { .. })),
                "{bad}: {error:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn only_this_machine_counts_as_loopback() -> anyhow::Result<()> {
        for (url, expected) in [
            ("http://127.0.0.1:5000", true),
            ("http://localhost:5000", true),
            ("http://[::1]:5000", true),
            ("http://10.0.0.7:5000", false),
            ("https://agents.example", false),
        ] {
            assert_eq!(is_loopback(&reqwest::Url::parse(url)?), expected, "{url}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_means_no_host_is_running() -> anyhow::Result<()> {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = HostClient::new(&config(None)?, Some(&url))?;
        let error = client.tasks().await.map(|_| ());
        let Err(error) = error else {
            anyhow::bail!("a closed port answered");
        };
        assert!(matches!(error, ClientError::NoHost { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("no agent-host is running at {url} (start one")),
            "{error}"
        );
        Ok(())
    }
}
