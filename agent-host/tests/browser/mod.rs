//! A headless Chromium driven through ChromeDriver, speaking the W3C WebDriver protocol
//! (JSON over HTTP) with the `reqwest` client the host already depends on: the dozen
//! endpoints a page test needs do not justify a WebDriver crate and its dependency tree.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// Debian's Chromium (package `chromium`).
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// Debian's ChromeDriver (package `chromium-driver`).
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key WebDriver names an element reference by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long ChromeDriver may take to start, and the browser to open a session.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a page may take to load before the navigation (or the click) that opened it
/// fails: far more than a page of this server on loopback needs.
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one WebDriver command may take (longer than a page load, so that ChromeDriver's
/// own page-load timeout is what reports a slow page).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What usually makes a page of this server load slowly in a browser.
const SLOW_PAGE_HINT: &str = "a browser opens at most 6 connections to one host over \
     HTTP/1.1, and a live page holds one for its event stream: do pages that were left (kept \
     in the back/forward cache) still hold theirs? app.js should close its EventSource on \
     `pagehide`";

/// Whether both Debian packages are installed.
pub(crate) fn installed() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// A ChromeDriver process on a free local port, killed on drop.
pub(crate) struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Driver {
    /// Starts ChromeDriver and waits until it says it is ready.
    pub(crate) async fn start() -> Self {
        // Everything that can fail goes first: once spawned, the process is only ever owned
        // by a `Driver`, whose drop kills it.
        let http = http_client();
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let mut driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http,
        };
        driver.wait_ready().await;
        driver
    }

    /// Polls `GET /status` until ChromeDriver is ready, failing after [`START_TIMEOUT`].
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last: String;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{CHROMEDRIVER} exited before it was ready: {status}");
            }
            match self.http.get(format!("{}/status", self.url)).send().await {
                Ok(response) => match response.json::<Value>().await {
                    Ok(body) if body["value"]["ready"] == true => return,
                    Ok(body) => last = body.to_string(),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            assert!(
                Instant::now() < deadline,
                "{CHROMEDRIVER} was not ready within {START_TIMEOUT:?}; last answer: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new headless browser session, its window `width` × `height`, with a fresh profile in
    /// `profile`.
    pub(crate) async fn session(&self, profile: &Path, width: u32, height: u32) -> Session {
        // These flags are what a root user on a closed network needs: no sandbox (root), and
        // none of the background connections to Google's hosts that the network refuses.
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {
                        "pageLoad": PAGE_LOAD_TIMEOUT.as_millis(),
                        "script": PAGE_LOAD_TIMEOUT.as_millis(),
                    },
                    "unhandledPromptBehavior": "ignore",
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                }
            }
        });
        let started = tokio::time::timeout(
            START_TIMEOUT,
            call(
                &self.http,
                reqwest::Method::POST,
                &format!("{}/session", self.url),
                Some(capabilities),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("Chromium did not start within {START_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("ChromeDriver could not start Chromium: {e}"));
        let id = started["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {started}"))
            .to_owned();
        Session {
            http: self.http.clone(),
            url: format!("{}/session/{id}", self.url),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-HTTP client whose requests end after [`COMMAND_TIMEOUT`].
pub(crate) fn http_client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own; like the binary, pick ring before
    // the first client exists, or building one panics (even for plain HTTP).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(COMMAND_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// A free TCP port on 127.0.0.1 (free when asked; ChromeDriver binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free local port")
        .port()
}

/// What ChromeDriver answered instead of a value.
#[derive(Debug)]
pub(crate) struct DriverError {
    /// The WebDriver error code, e.g. `no such element`, or `http` when there was no answer.
    pub(crate) error: String,
    /// What went wrong.
    pub(crate) message: String,
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// One WebDriver command: the answer's `value`, or the error it names.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, DriverError> {
    let transport = |e: reqwest::Error| DriverError {
        error: "http".into(),
        message: format!("{url}: {e}"),
    };
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(transport)?;
    let ok = response.status().is_success();
    let mut body: Value = response.json().await.map_err(transport)?;
    let value = body["value"].take();
    if ok {
        Ok(value)
    } else {
        Err(DriverError {
            error: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
            message: value["message"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// An element of the current page, as WebDriver names it.
#[derive(Debug, Clone)]
pub(crate) struct Element(String);

/// A browser session; [`Session::close`] ends it (and the browser).
pub(crate) struct Session {
    http: reqwest::Client,
    url: String,
}

impl Session {
    /// A command on this session; `path` starts with `/` (or is empty).
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DriverError> {
        call(&self.http, method, &format!("{}{path}", self.url), body).await
    }

    /// `POST path` with `body`, failing the test on an error.
    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body))
            .await
            .unwrap_or_else(|e| panic!("WebDriver POST {path} failed: {e}"))
    }

    /// `GET path`, failing the test on an error.
    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None)
            .await
            .unwrap_or_else(|e| panic!("WebDriver GET {path} failed: {e}"))
    }

    /// Opens `url` and waits for it to load.
    pub(crate) async fn goto(&self, url: &str) {
        let opened = self
            .command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
        match opened {
            Ok(_) => {}
            Err(e) if e.error == "timeout" => {
                panic!("{url} did not load within {PAGE_LOAD_TIMEOUT:?} ({e}); {SLOW_PAGE_HINT}")
            }
            Err(e) => panic!("opening {url} failed: {e}"),
        }
    }

    /// The address of the current page.
    pub(crate) async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Resizes the window so that the page's viewport is `width` × `height` CSS pixels (the
    /// window is larger by whatever frame the browser draws around the page).
    pub(crate) async fn set_viewport(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
        let inner = self
            .execute("return [window.innerWidth, window.innerHeight];", json!([]))
            .await;
        let frame = |index: usize, wanted: u32| {
            let got = inner[index].as_u64().unwrap_or(u64::from(wanted));
            u64::from(wanted).saturating_sub(got)
        };
        let (extra_width, extra_height) = (frame(0, width), frame(1, height));
        if extra_width > 0 || extra_height > 0 {
            self.post(
                "/window/rect",
                json!({
                    "width": u64::from(width) + extra_width,
                    "height": u64::from(height) + extra_height,
                }),
            )
            .await;
        }
    }

    /// The first element matching the CSS `selector`, if any.
    pub(crate) async fn find(&self, selector: &str) -> Option<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await;
        match found {
            Ok(value) => value[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned())),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("finding {selector} failed: {e}"),
        }
    }

    /// The first element matching `selector`, failing the test with what the page shows when
    /// there is none.
    pub(crate) async fn expect(&self, selector: &str) -> Element {
        match self.find(selector).await {
            Some(element) => element,
            None => panic!("no `{selector}` on the page\n{}", self.describe().await),
        }
    }

    /// Clicks `element` as a user would (scrolled into view, at its centre).
    ///
    /// When the click opens a page, ChromeDriver waits for it to load.
    pub(crate) async fn click(&self, element: &Element) {
        let path = format!("/element/{}/click", element.0);
        let clicked = self
            .command(reqwest::Method::POST, &path, Some(json!({})))
            .await;
        match clicked {
            Ok(_) => {}
            Err(e) if e.error == "timeout" => panic!(
                "the page a click opened did not load within {PAGE_LOAD_TIMEOUT:?} ({e}); \
                 {SLOW_PAGE_HINT}"
            ),
            Err(e) => panic!("the click failed: {e}\n{}", self.describe().await),
        }
    }

    /// Types `text` into `element`.
    pub(crate) async fn type_text(&self, element: &Element, text: &str) {
        self.post(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns what
    /// it returns.
    pub(crate) async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// The text of the open `alert`/`confirm`/`prompt` dialog, if one is open.
    pub(crate) async fn open_dialog(&self) -> Option<String> {
        match self
            .command(reqwest::Method::GET, "/alert/text", None)
            .await
        {
            Ok(text) => Some(text.as_str().unwrap_or_default().to_owned()),
            Err(e) if e.error == "no such alert" => None,
            Err(e) => panic!("asking for an open dialog failed: {e}"),
        }
    }

    /// Polls `script` (a function body) until it returns something other than `null`,
    /// `false`, `0` or `""`, and returns that; fails the test after `timeout`, saying `what`
    /// was awaited and what the page showed.
    pub(crate) async fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            // A page may be between two documents (a form just submitted): try again.
            if let Ok(value) = self
                .command(
                    reqwest::Method::POST,
                    "/execute/sync",
                    Some(json!({ "script": script, "args": [] })),
                )
                .await
                && truthy(&value)
            {
                eprintln!("browser: {what}: after {:?}", started.elapsed());
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}, in vain\n{}",
                self.describe().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The current address and the text of `#main` (or of the body), for failure messages.
    pub(crate) async fn describe(&self) -> String {
        let url = self
            .command(reqwest::Method::GET, "/url", None)
            .await
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|e| format!("(no address: {e})"));
        let text = self
            .command(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({
                    "script": "const m = document.querySelector('#main') || document.body; \
                               return m ? m.innerText : '(no body)';",
                    "args": [],
                })),
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|e| format!("(no text: {e})"));
        format!("page: {url}\n--- #main ---\n{text}\n-------------")
    }

    /// Saves a PNG of the viewport to `path`.
    pub(crate) async fn screenshot(&self, path: &Path) {
        let encoded = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Ends the session, which closes the browser.
    pub(crate) async fn close(self) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
    }
}

/// Whether a script's answer means "yes".
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Where screenshots go: `$AGENT_PIPELINE_SCREENSHOTS` when set (the docs run points it at
/// `docs/images`), else a directory of the test's own, so that CI leaves the checkout clean.
pub(crate) fn screenshot_dir(fallback: &Path) -> PathBuf {
    match std::env::var_os("AGENT_PIPELINE_SCREENSHOTS") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            dir
        }
        _ => fallback.to_path_buf(),
    }
}
