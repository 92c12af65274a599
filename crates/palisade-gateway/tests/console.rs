//! The web console (`/ui` on the admin listener): its HTTP security from a plain client (session
//! cookie, CSRF, same-origin, CSP, throttled logins, audit), and the whole console in real headless
//! Chromium through WebDriver: log in, see traffic move, watch an alert and its block appear after
//! forged API keys, lift the block and see the client served again, log out, no console errors.
//! Screenshots of every view go to `docs/console/` when `PALISADE_UPDATE_SCREENSHOTS=1`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use support::webdriver::Browser;

const ADMIN_TOKEN: &str = "adm_console_7c1e9b2a5d4f3e6a8b0c";
const ATTACKER: &str = "203.0.113.66";

fn config(
    echo: SocketAddr,
    dir: &std::path::Path,
    mesh: Option<&support::mesh::Mesh>,
    identity: Option<&palisade_mesh::IdentityPaths>,
) -> String {
    let listeners = match (mesh, identity) {
        (Some(mesh), Some(identity)) => format!(
            "listeners:\n  - {{ name: public, address: 127.0.0.1:0 }}\n  - name: mesh\n    address: 127.0.0.1:0\n    tls:\n      cert: {}\n      key: {}\n      client_certificates: {{ mode: request, ca: [{}] }}\n",
            identity.cert.display(),
            identity.key.display(),
            mesh.bundle().display()
        ),
        _ => String::new(),
    };
    format!(
        "{listeners}trusted_proxies: [127.0.0.1]
admin:
  address: 127.0.0.1:0
  token: file:{token}
audit:
  path: {audit}
authentication:
  api_keys:
    keys: [{{ name: reporting, hash: \"{hash}\" }}]
detection:
  enabled: true
  auth_failures:
    threshold: 10
    respond: {{ action: block, ttl: 10m }}
clusters:
  echo:
    targets: [\"{echo}\"]
    health_check: {{ path: /, interval: 1s }}
routes:
  - name: shop
    match: {{ prefix: /shop }}
    cluster: echo
    public: true
    rate_limits: [{{ name: per-client, rate: 1000/s, key: client_ip }}]
  - name: reports
    match: {{ prefix: /reports }}
    cluster: echo
    authentication: [api_key]
    authorization: {{ allow: authenticated }}
",
        audit = dir.join("audit.log").display(),
        token = {
            let path = dir.join("admin.token");
            std::fs::write(&path, ADMIN_TOKEN).unwrap();
            path.display().to_string()
        },
        hash = palisade_auth::apikey::generate().1,
    )
}

struct Admin {
    base: String,
    host: String,
}

impl Admin {
    fn of(gateway: &support::Running) -> Admin {
        let address = gateway.gateway.admin_addr();
        Admin {
            base: format!("http://{address}"),
            host: address.to_string(),
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> support::Reply {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let (status, headers, body) = support::send_full(&support::client(), request).await;
        support::Reply { status, headers, body }
    }

    /// Logs in as a browser would (same origin) and returns the session cookie and CSRF token.
    async fn login(&self) -> (String, String) {
        let origin = format!("http://{}", self.host);
        let reply = self
            .send(
                "POST",
                "/ui/login",
                &[
                    ("origin", &origin),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                &format!("token={ADMIN_TOKEN}"),
            )
            .await;
        assert_eq!(reply.status, 204, "{}", reply.body);
        let set_cookie = reply.headers["set-cookie"].to_str().unwrap().to_string();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let session = self.send("GET", "/ui/api/session", &[("cookie", &cookie)], "").await;
        let csrf = serde_json::from_str::<Value>(&session.body).unwrap()["csrf"]
            .as_str()
            .unwrap()
            .to_string();
        (cookie, csrf)
    }
}

fn audit_events(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[tokio::test]
async fn the_console_refuses_without_a_session_and_every_change_needs_the_csrf_token() {
    let echo = support::echo("shop").await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = support::start(&config(echo, dir.path(), None, None)).await;
    let admin = Admin::of(&gateway);

    // The page itself loads (it holds no data) with a strict policy; the data does not.
    let page = admin.send("GET", "/ui/", &[], "").await;
    assert_eq!(page.status, 200);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(admin.send("GET", "/ui/assets/console.js", &[], "").await.status, 200);
    assert_eq!(admin.send("GET", "/ui/assets/../Cargo.toml", &[], "").await.status, 404);
    for view in ["traffic", "decisions", "alerts", "upstreams", "mesh", "config", "audit"] {
        let reply = admin.send("GET", &format!("/ui/api/{view}"), &[], "").await;
        assert_eq!(reply.status, 401, "{view} without a session");
    }
    let session = admin.send("GET", "/ui/api/session", &[], "").await;
    assert_eq!(session.body, r#"{"authenticated":false}"#);
    let forged = admin
        .send(
            "GET",
            "/ui/api/traffic",
            &[("cookie", &format!("palisade_console={}", "ab".repeat(32)))],
            "",
        )
        .await;
    assert_eq!(forged.status, 401, "a made-up session id");
    // The admin token itself is not a session.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(
        admin
            .send("GET", "/ui/api/traffic", &[("authorization", &bearer)], "")
            .await
            .status,
        401
    );

    // A wrong token is refused and audited; a login from another site is refused.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(admin.send("POST", "/ui/login", &form, "token=guess").await.status, 401);
    let cross = admin
        .send(
            "POST",
            "/ui/login",
            &[
                ("origin", "http://evil.test"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &format!("token={ADMIN_TOKEN}"),
        )
        .await;
    assert_eq!(cross.status, 403, "login CSRF");

    let (cookie, csrf) = admin.login().await;
    assert_eq!(
        admin
            .send("GET", "/ui/api/config", &[("cookie", &cookie)], "")
            .await
            .status,
        200
    );

    // Changes: without the CSRF token, with a wrong one, or from another site: refused, nothing applied.
    let block = format!(r#"{{"ip":"{ATTACKER}","action":"block","ttl":"5m","reason":"console test"}}"#);
    let json = ("content-type", "application/json");
    for headers in [
        vec![("cookie", cookie.as_str()), json],
        vec![("cookie", cookie.as_str()), json, ("x-csrf-token", "0000")],
        vec![
            ("cookie", cookie.as_str()),
            json,
            ("x-csrf-token", csrf.as_str()),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![
            ("cookie", cookie.as_str()),
            json,
            ("x-csrf-token", csrf.as_str()),
            ("origin", "http://evil.test"),
        ],
    ] {
        let refused = admin.send("POST", "/ui/api/responses", &headers, &block).await;
        assert_eq!(refused.status, 403, "{headers:?}: {}", refused.body);
    }
    assert_eq!(
        support::call(&gateway.url("/shop/a"), &[("x-forwarded-for", ATTACKER)])
            .await
            .status,
        200,
        "nothing applied"
    );
    // With it: the block applies at once, and is lifted the same way.
    let added = admin
        .send(
            "POST",
            "/ui/api/responses",
            &[("cookie", &cookie), json, ("x-csrf-token", &csrf)],
            &block,
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(
        support::call(&gateway.url("/shop/a"), &[("x-forwarded-for", ATTACKER)])
            .await
            .status,
        403
    );
    let id = serde_json::from_str::<Value>(&added.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lifted = admin
        .send(
            "DELETE",
            &format!("/ui/api/responses/{id}"),
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            "",
        )
        .await;
    assert_eq!(lifted.status, 204, "{}", lifted.body);
    assert_eq!(
        support::call(&gateway.url("/shop/a"), &[("x-forwarded-for", ATTACKER)])
            .await
            .status,
        200
    );

    // Logout ends the session for good.
    let out = admin
        .send(
            "POST",
            "/ui/logout",
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            "",
        )
        .await;
    assert_eq!(out.status, 204);
    assert_eq!(
        admin
            .send("GET", "/ui/api/config", &[("cookie", &cookie)], "")
            .await
            .status,
        401
    );

    // Every login, change and refusal is an audit event; the token never is.
    support::eventually("the console's audit events are written", || async {
        let events = audit_events(dir.path());
        let operation = |op: &str, refused: bool| {
            events
                .iter()
                .any(|e| e["api"]["operation"] == op && (e["unmapped"]["event"] == "admin_refused") == refused)
        };
        operation("POST /ui/login", true)
            && operation("POST /ui/login", false)
            && operation("POST /ui/api", true)
            && operation("POST /ui/api/responses", false)
            && operation("DELETE /ui/api/responses/{id}", false)
            && operation("POST /ui/logout", false)
    })
    .await;
    let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(!log.contains(ADMIN_TOKEN) && !log.contains(&csrf) && !log.contains(&cookie[17..]));
}

#[tokio::test]
async fn failed_logins_are_throttled_and_a_gateway_without_a_token_has_no_console() {
    let echo = support::echo("shop").await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = support::start(&config(echo, dir.path(), None, None)).await;
    let admin = Admin::of(&gateway);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for _ in 0..palisade_console::session::MAX_FAILED_LOGINS_PER_MINUTE {
        assert_eq!(admin.send("POST", "/ui/login", &form, "token=guess").await.status, 401);
    }
    let throttled = admin
        .send("POST", "/ui/login", &form, &format!("token={ADMIN_TOKEN}"))
        .await;
    assert_eq!(throttled.status, 429, "even the right token waits");
    assert_eq!(throttled.headers["retry-after"], "60");

    let open = support::start(&format!("clusters:\n  echo: {{ targets: [\"{echo}\"] }}\nroutes:\n  - {{ name: r, match: {{ prefix: / }}, cluster: echo, public: true }}\n")).await;
    let admin = Admin::of(&open);
    let refused = admin.send("POST", "/ui/login", &form, "token=").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("admin.token"));
}

fn screenshot_dir() -> std::path::PathBuf {
    if std::env::var_os("PALISADE_UPDATE_SCREENSHOTS").is_some() {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console")
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
    }
}

async fn save(browser: &Browser, name: &str) {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The whole console in headless Chromium.
#[tokio::test]
async fn the_console_in_a_real_browser() {
    let (chromium, driver) = match support::webdriver::installed() {
        Ok(found) => found,
        Err(missing) => {
            eprintln!("{missing}; browser test skipped (CI installs chromium and chromium-driver)");
            return;
        }
    };
    let echo = support::echo("shop").await;
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = support::mesh::Mesh::new(support::mesh::DOMAIN);
    let identity = mesh.identity("gateway", &support::mesh::id("/ns/edge/sa/gateway"));
    let gateway = support::start(&config(echo, dir.path(), Some(&mesh), Some(&identity))).await;
    let admin = Admin::of(&gateway);
    let browser = Browser::start(&chromium, &driver).await;

    // Without a session the page shows only the login form.
    browser.goto(&format!("{}/ui/", admin.base)).await;
    browser
        .wait_until("the login form", Duration::from_secs(10), || {
            browser.visible("#login-form")
        })
        .await;
    assert!(!browser.visible("#nav").await, "no views before login");
    save(&browser, "login").await;
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("#login-form button[type=submit]").await;
    browser
        .wait_until("the views after login", Duration::from_secs(10), || {
            browser.visible("#view-traffic")
        })
        .await;
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c.0 == "palisade_console")
        .expect("the session cookie");
    assert!(session.2, "HttpOnly");
    assert_eq!(session.3, "Strict");
    assert_eq!(
        browser.eval("return document.cookie;", serde_json::json!([])).await,
        "",
        "the page's scripts cannot read the session"
    );

    // Traffic: the chart moves once the gateway has served some (for the committed screenshots, a
    // minute of varying traffic so the charts have a shape).
    let rounds = if std::env::var_os("PALISADE_UPDATE_SCREENSHOTS").is_some() {
        600
    } else {
        40
    };
    let traffic = tokio::spawn({
        let url = gateway.url("/shop/items");
        let missing = gateway.url("/nowhere");
        async move {
            for round in 0..rounds {
                support::call(&url, &[]).await;
                if round % 7 == 0 {
                    support::call(&missing, &[]).await;
                }
                let pause = if (round / 100) % 2 == 0 { 100 } else { 40 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    });
    browser
        .wait_until("the traffic chart to move", Duration::from_secs(30), || async {
            browser.data_number("#traffic-chart", "points").await > 0
                && browser.data_number("#routes-chart", "points").await > 0
        })
        .await;
    traffic.await.unwrap();
    browser
        .wait_until("the shop route in the table", Duration::from_secs(15), || async {
            browser.text("#routes-table tbody").await.contains("shop")
        })
        .await;
    save(&browser, "traffic").await;

    // Forged API keys: an alert, and the attacker blocked.
    for n in 0..10 {
        let key = format!("pk_forged_{n}");
        let reply = support::call(
            &gateway.url("/reports/q1"),
            &[("x-forwarded-for", ATTACKER), ("x-api-key", &key)],
        )
        .await;
        assert_eq!(reply.status, 401);
    }
    browser.click("#nav button[data-view=alerts]").await;
    browser
        .wait_until("the alert and its block", Duration::from_secs(15), || async {
            browser.text("#alerts-table tbody").await.contains("auth_failures")
                && browser.text("#responses-table tbody").await.contains(ATTACKER)
        })
        .await;
    assert_eq!(
        support::call(&gateway.url("/shop/items"), &[("x-forwarded-for", ATTACKER)])
            .await
            .status,
        403
    );
    save(&browser, "alerts").await;

    // A CSRF-less change from the page's own scripts is refused too.
    let refused = browser
        .eval(
            "return fetch('/ui/api/responses', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status);",
            serde_json::json!([]),
        )
        .await;
    assert_eq!(refused, 403, "no CSRF token, no change");

    // Lift the block with its button: the attacker's address is served again.
    browser.click("#responses-table button.lift").await;
    browser
        .wait_until("the block to go", Duration::from_secs(10), || async {
            browser.data_number("#responses-table", "rows").await == 0
        })
        .await;
    assert_eq!(
        support::call(&gateway.url("/shop/items"), &[("x-forwarded-for", ATTACKER)])
            .await
            .status,
        200
    );

    // Decisions: the refusals, their reason and the refused client.
    browser.click("#nav button[data-view=decisions]").await;
    browser
        .wait_until("the refusals", Duration::from_secs(15), || async {
            browser.text("#top-reasons tbody").await.contains("unknown_api_key")
                && browser.text("#top-clients tbody").await.contains(ATTACKER)
                && browser.data_number("#decisions-chart", "points").await > 0
        })
        .await;
    save(&browser, "decisions").await;

    for (view, table, expect) in [
        ("upstreams", "#upstreams-table", echo.to_string()),
        ("mesh", "#identities-table", support::mesh::id("/ns/edge/sa/gateway")),
        ("config", "#config-routes", "api key".to_string()),
        ("audit", "#audit-table", "admin API POST /ui/login".to_string()),
    ] {
        browser.click(&format!("#nav button[data-view={view}]")).await;
        browser
            .wait_until(view, Duration::from_secs(10), || async {
                browser.text(&format!("{table} tbody")).await.contains(&expect)
            })
            .await;
        save(&browser, view).await;
    }
    assert!(
        browser.text("#roots-table tbody").await.contains(support::mesh::DOMAIN)
            || browser.data_number("#roots-table", "rows").await > 0
    );

    let problems: Vec<_> = browser
        .console_log()
        .await
        .into_iter()
        .filter(|(level, message)| {
            level == "SEVERE"
                && !message
                    .contains("/ui/api/responses - Failed to load resource: the server responded with a status of 403")
        })
        .collect();
    assert!(problems.is_empty(), "console errors: {problems:?}");

    // Log out: back to the login form, and the old session is gone.
    browser.click("#logout").await;
    browser
        .wait_until("the login form after logout", Duration::from_secs(10), || {
            browser.visible("#login-form")
        })
        .await;
    assert!(!browser.visible("#nav").await);
    let old = format!("palisade_console={}", session.1);
    assert_eq!(
        admin
            .send("GET", "/ui/api/traffic", &[("cookie", &old)], "")
            .await
            .status,
        401
    );
}
