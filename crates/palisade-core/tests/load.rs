use palisade_core::{parse_str, ConfigErrors};

const MINIMAL: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
clusters:
  echo:
    targets: ["127.0.0.1:9000"]
routes:
  - name: all
    match: { prefix: / }
    cluster: echo
    public: true
"#;

/// Each `(place, words)`: some error starts with `file:line:column` and says `words`.
fn assert_errors_at(found: &[String], expect: &[(&str, &str)]) {
    for (place, words) in expect {
        assert!(
            found.iter().any(|f| f.starts_with(place) && f.contains(words)),
            "missing {place} {words} in {found:#?}"
        );
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse_str("gw.yaml", text, None) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(found)) => found.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_config_loads_with_secure_defaults() {
    let config = parse_str("gw.yaml", MINIMAL, None).expect("valid");
    assert_eq!(
        config.admin.address.value, "127.0.0.1:9901",
        "admin listens on loopback by default"
    );
    assert!(
        config.trusted_proxies.is_empty(),
        "no peer is trusted unless configured"
    );
    assert_eq!(config.limits.max_headers, 100);
}

#[test]
fn unknown_key_is_an_error_with_file_line_and_column() {
    let text = MINIMAL.replace("    cluster: echo", "    cluster: echo\n    clustr: typo");
    let found = errors(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("gw.yaml:12:5"), "{found:?}");
    assert!(found[0].contains("clustr"), "{found:?}");
}

#[test]
fn wrong_type_names_what_was_expected() {
    let text = MINIMAL.replace("address: 127.0.0.1:8080", "address: [1, 2]");
    let found = errors(&text);
    assert!(found[0].starts_with("gw.yaml:4:"), "{found:?}");
}

#[test]
fn every_semantic_error_is_reported_with_its_location() {
    let text = r#"
listeners:
  - name: public
    address: not-an-address
trusted_proxies: ["10.0.0.0/8", "banana"]
clusters:
  echo:
    targets: ["127.0.0.1"]
routes:
  - name: a
    match: { prefix: /, path: /x }
    cluster: nowhere
    public: true
"#;
    assert_errors_at(
        &errors(text),
        &[
            ("gw.yaml:4:14", "not an address"),
            ("gw.yaml:5:33", "banana"),
            ("gw.yaml:8:15", "not host:port"),
            ("gw.yaml:11:12", "either `path` or `prefix`"),
            ("gw.yaml:12:14", "unknown cluster"),
        ],
    );
}

#[test]
fn store_tls_needs_a_tls_store_existing_files_and_a_whole_client_identity() {
    // Positions: `store_tls`'s mapping starts at its first key (line 16), `ca`'s value at 16:9.
    let text = format!(
        "{MINIMAL}rate_limits:\n  store: redis://cache:6379/\n  store_tls:\n    ca: /nonexistent/ca.pem\n    cert: /nonexistent/gateway.pem\n"
    );
    assert_errors_at(
        &errors(&text),
        &[
            ("gw.yaml:16:5", "needs a TLS store URL"),
            ("gw.yaml:16:9", "does not exist"),
            ("gw.yaml:16:5", "cert and key go together"),
        ],
    );
    let fine = format!("{MINIMAL}rate_limits:\n  store: rediss://cache:6380/\n  store_tls: {{}}\n");
    assert!(errors(&fine).is_empty(), "{:?}", errors(&fine));
}

#[test]
fn durations_and_sizes_are_human_units() {
    let text = format!("{MINIMAL}limits:\n  header_read_timeout: 250ms\n  max_body_bytes: 1MiB\n");
    let config = parse_str("gw.yaml", &text, None).expect("valid");
    assert_eq!(config.limits.header_read_timeout.get().as_millis(), 250);
    assert_eq!(config.limits.max_body_bytes.get(), 1024 * 1024);
    let bad = format!("{MINIMAL}limits:\n  header_read_timeout: soon\n");
    assert!(errors(&bad)[0].contains("invalid duration"));
}

#[test]
fn hostile_yaml_is_refused_without_panicking() {
    let bomb = "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n";
    assert!(!errors(bomb).is_empty());
    assert!(!errors("\u{0}\u{1}:::").is_empty());
    assert!(!errors("").is_empty());
}

#[test]
fn named_cedar_operations_need_policies_and_upper_case_methods() {
    let text = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
authentication:
  jwt_providers:
    idp:
      issuer: https://idp.example
      audiences: [api]
      keys: { jwks: { keys: [{ kty: EC, crv: P-256, kid: k, x: f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU, y: x_FEzRjm7AK_B0F83ZQ91v7e2S6i_xq7X0xxNAgDfvs }] } }
clusters:
  echo:
    targets: ["127.0.0.1:9000"]
routes:
  - name: rules-with-actions
    match: { prefix: /a }
    cluster: echo
    authentication: [{ jwt: idp }]
    authorization: { allow: authenticated, actions: { GET: readOrder } }
  - name: lower-case
    match: { prefix: /b }
    cluster: echo
    authentication: [{ jwt: idp }]
    authorization: { policies: shop, actions: { get: readOrder } }
"#;
    assert_errors_at(
        &errors(text),
        &[
            ("gw.yaml:19:20", "they need `policies`"),
            ("gw.yaml:24:54", "\"get\" is not an upper-case method"),
        ],
    );
}

#[test]
fn unset_environment_variables_are_reported_where_they_are_named() {
    let text = format!(
        "{MINIMAL}admin:\n  address: 127.0.0.1:9901\n  token: \"${{PALISADE_TEST_UNSET_ADMIN}}\"\ndetection:\n  webhook:\n    url: https://hooks.example.com/x\n    headers:\n      authorization: \"${{PALISADE_TEST_UNSET_HOOK}}\"\n"
    );
    let found = errors(&text);
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert_errors_at(
        &found,
        &[
            (
                &format!("gw.yaml:{}:", line_of("PALISADE_TEST_UNSET_ADMIN")),
                "PALISADE_TEST_UNSET_ADMIN is not set",
            ),
            (
                &format!("gw.yaml:{}:", line_of("PALISADE_TEST_UNSET_HOOK")),
                "PALISADE_TEST_UNSET_HOOK is not set",
            ),
        ],
    );
}
