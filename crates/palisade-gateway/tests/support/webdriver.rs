//! A small W3C WebDriver client for the console's browser tests: Debian's `chromium` driven by
//! `chromedriver`, both started by the test on 127.0.0.1 and headless. Only the commands the tests
//! use; every wait polls for a condition with a deadline.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

/// W3C's key for an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

/// Where the browser and its driver are, or `None` (with the reason) when they are not installed.
pub fn installed() -> Result<(String, String), String> {
    let find = |names: &[&str]| {
        names
            .iter()
            .find(|name| {
                Command::new(name)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(|name| name.to_string())
    };
    let browser = find(&["chromium", "chromium-browser", "google-chrome"]).ok_or("chromium is not installed")?;
    let driver = find(&["chromedriver"]).ok_or("chromedriver is not installed (Debian: chromium-driver)")?;
    Ok((browser, driver))
}

impl Browser {
    pub async fn start(browser: &str, driver: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, body)) = request("GET", &format!("{base}/status"), None).await {
                if body["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let user_data = std::env::temp_dir().join(format!("palisade-chromium-{port}"));
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": which(browser),
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--window-size=1360,1000", "--no-first-run", "--disable-extensions",
                             format!("--user-data-dir={}", user_data.display())],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let (status, answer) = request("POST", &format!("{base}/session"), Some(capabilities))
            .await
            .expect("a session");
        assert_eq!(status, 200, "new session: {answer}");
        let session = answer["value"]["sessionId"].as_str().expect("session id").to_string();
        Browser {
            driver: child,
            base,
            session,
        }
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let (status, answer) = request(method, &url, body).await.expect("the driver answers");
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The element `selector` finds; fails the test if there is none.
    pub async fn find(&self, selector: &str) -> String {
        let found = self
            .command(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {selector}"))
            .to_string()
    }

    /// Clicks `selector`, finding it again if the page replaced it between the find and the click.
    pub async fn click(&self, selector: &str) {
        for _ in 0..5 {
            let element = self.find(selector).await;
            let url = format!("{}/session/{}/element/{element}/click", self.base, self.session);
            let (status, answer) = request("POST", &url, Some(json!({})))
                .await
                .expect("the driver answers");
            if status == 200 {
                return;
            }
            assert_eq!(
                answer["value"]["error"], "stale element reference",
                "click {selector}: {answer}"
            );
        }
        panic!("{selector} kept being replaced");
    }

    pub async fn type_into(&self, selector: &str, text: &str) {
        let element = self.find(selector).await;
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
            .await
    }

    /// Whether the element `selector` exists and is not hidden.
    pub async fn visible(&self, selector: &str) -> bool {
        self.eval(
            "const e = document.querySelector(arguments[0]); return !!e && !e.closest('[hidden]');",
            json!([selector]),
        )
        .await
            == true
    }

    pub async fn text(&self, selector: &str) -> String {
        self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([selector]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// A `data-` attribute of `selector` as a number (0 when absent).
    pub async fn data_number(&self, selector: &str, name: &str) -> u64 {
        self.eval(
            "const e = document.querySelector(arguments[0]); return e ? (e.dataset[arguments[1]] || '0') : '0';",
            json!([selector, name]),
        )
        .await
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
    }

    /// Polls `condition` until it holds or `limit` passes.
    pub async fn wait_until<F, Fut>(&self, what: &str, limit: Duration, condition: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while !condition().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let png = self.command("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("valid base64")
    }

    /// The browser console's entries since the last call (level and message).
    pub async fn console_log(&self) -> Vec<(String, String)> {
        let url = format!("{}/session/{}/se/log", self.base, self.session);
        let (status, answer) = request("POST", &url, Some(json!({ "type": "browser" })))
            .await
            .expect("the driver answers");
        assert_eq!(status, 200, "browser log: {answer}");
        answer["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|entry| {
                (
                    entry["level"].as_str().unwrap_or_default().to_string(),
                    entry["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Cookies the browser holds for the current page, as (name, value, httpOnly, sameSite).
    pub async fn cookies(&self) -> Vec<(String, String, bool, String)> {
        let cookies = self.command("GET", "/cookie", None).await;
        cookies
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["value"].as_str().unwrap_or_default().to_string(),
                    c["httpOnly"] == true,
                    c["sameSite"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn which(program: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| program.to_string())
}

async fn request(method: &str, url: &str, body: Option<Value>) -> Result<(u16, Value), String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let client = super::client();
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .map_err(|_| "the driver did not answer in 60 s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}
