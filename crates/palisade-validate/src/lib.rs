//! Request validation against an OpenAPI 3.0 or 3.1 operation: path, query and header parameters
//! (type, required, enum, pattern, … — whatever their schema says), the `Content-Type`, and JSON
//! bodies. Every schema is compiled once at load with the `jsonschema` crate, inside the document
//! so that `$ref`s resolve; nothing is fetched from the network or the file system at run time.
//!
//! Violations name where (a JSON pointer into the request: `/query/limit`, `/body/items/0/price`)
//! and what was expected, never the offending value, so an answer cannot reflect a secret back.
#![forbid(unsafe_code)]

mod document;
mod parameter;
mod strict_json;

use http::{HeaderMap, Method};
use jsonschema::Validator;
use palisade_core::config::ValidationConfig;
use palisade_core::problem::Violation;
use palisade_core::ConfigErrors;
use serde_json::Value;

use document::{fail, Document, Located, BASE};
use parameter::{Location, Parameter};

/// Messages longer than this are cut: a violation list stays small whatever the schema says.
const MAX_MESSAGE_CHARS: usize = 200;

/// What one route checks.
pub struct RouteValidator {
    operations: Vec<Operation>,
    reject_unknown_query: bool,
    max_violations: usize,
}

struct Operation {
    method: Method,
    parameters: Vec<Parameter>,
    body: Option<BodyRules>,
}

/// The request body an operation accepts.
pub struct BodyRules {
    required: bool,
    /// Media types as written (lower case), with the schema of those that are JSON.
    media: Vec<(String, Option<Validator>)>,
    max_violations: usize,
}

/// The parts of a request that validation reads before the body.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path_params: &'a [(String, String)],
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Whether the request has a body (a non-zero `Content-Length`, or chunked).
    pub has_body: bool,
}

impl RouteValidator {
    /// Loads the document and compiles the route's operations. `route_path` is the route's
    /// `match.path`, used when no `operation` is named.
    pub fn load(config: &ValidationConfig, route_path: Option<&str>) -> Result<RouteValidator, ConfigErrors> {
        let document = Document::load(&config.openapi.value)?;
        let located = match (&config.operation, route_path) {
            (Some(id), _) => document.by_operation_id(&id.value),
            (None, Some(path)) => document.by_path(path),
            (None, None) => Vec::new(),
        };
        if located.is_empty() {
            let wanted = match (&config.operation, route_path) {
                (Some(id), _) => format!("an operation with operationId {:?}", id.value),
                (None, Some(path)) => format!("operations under the path {path:?}"),
                (None, None) => "an operation (a prefix route must name `operation`)".to_string(),
            };
            return Err(fail(&document.file, format!("the document has no {wanted}")));
        }
        let compiler = Compiler::new(&document);
        let mut operations = Vec::new();
        for operation in &located {
            let compiled = compiler
                .operation(operation, config.max_violations)
                .and_then(|compiled| compiled.fits(route_path))
                .map_err(|message| {
                    fail(
                        &document.file,
                        format!(
                            "{} {}: {message}",
                            operation.method.to_uppercase(),
                            operation.path_pointer
                        ),
                    )
                })?;
            operations.push(compiled);
        }
        Ok(RouteValidator {
            operations,
            reject_unknown_query: config.reject_unknown_query,
            max_violations: config.max_violations.max(1),
        })
    }

    /// Checks everything but the body. `Ok(Some(rules))`: the body must be checked too, with
    /// `rules`, once it has been read.
    pub fn check(&self, request: &RequestView<'_>) -> Result<Option<&BodyRules>, Vec<Violation>> {
        let Some(operation) = self.operations.iter().find(|op| op.method == request.method) else {
            return Err(vec![violation(
                "/method",
                "this method is not part of the API contract",
            )]);
        };
        let mut violations = Vec::new();
        let query: Vec<(String, String)> = request
            .query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        for parameter in &operation.parameters {
            let values: Vec<&str> = match parameter.location {
                Location::Path => values_named(request.path_params, &parameter.name),
                Location::Query => values_named(&query, &parameter.name),
                Location::Header => request
                    .headers
                    .get_all(parameter.name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect(),
            };
            parameter.check(&values, &mut violations);
        }
        if self.reject_unknown_query {
            for (name, _) in &query {
                let declared = operation
                    .parameters
                    .iter()
                    .any(|p| p.location == Location::Query && &p.name == name);
                if !declared {
                    violations.push(violation(
                        &format!("/query/{}", document::escape(name)),
                        "unknown query parameter",
                    ));
                }
            }
        }
        let body = operation
            .body
            .as_ref()
            .and_then(|body| body.check_head(request, &mut violations));
        if violations.is_empty() {
            Ok(body)
        } else {
            violations.truncate(self.max_violations);
            Err(violations)
        }
    }
}

impl Operation {
    /// Every path parameter the operation declares must be one the route's template captures;
    /// otherwise each request would miss it and be refused.
    fn fits(self, route_path: Option<&str>) -> Result<Operation, String> {
        for parameter in self.parameters.iter().filter(|p| p.location == Location::Path) {
            let placeholder = format!("{{{}}}", parameter.name);
            if !route_path.is_some_and(|path| path.contains(&placeholder)) {
                return Err(format!(
                    "path parameter {:?} is not captured by the route's match.path {}",
                    parameter.name,
                    route_path.map_or_else(|| "(a prefix route captures none)".to_string(), |p| format!("{p:?}"))
                ));
            }
        }
        Ok(self)
    }
}

impl BodyRules {
    /// `Content-Type` and presence; the schema to check the body against, if any.
    fn check_head(&self, request: &RequestView<'_>, violations: &mut Vec<Violation>) -> Option<&BodyRules> {
        if !request.has_body {
            if self.required {
                violations.push(violation("/body", "a request body is required"));
            }
            return None;
        }
        let content_type = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(media_type);
        let Some(content_type) = content_type else {
            violations.push(violation(
                "/content-type",
                &format!("expected one of {}", self.media_list()),
            ));
            return None;
        };
        match self
            .media
            .iter()
            .find(|(accepted, _)| media_matches(accepted, &content_type))
        {
            None => {
                violations.push(violation(
                    "/content-type",
                    &format!("expected one of {}", self.media_list()),
                ));
                None
            }
            Some((_, Some(_))) if is_json(&content_type) => Some(self),
            Some(_) => None,
        }
    }

    /// Checks a complete body (only JSON bodies reach here).
    pub fn check(&self, content_type: Option<&str>, body: &[u8]) -> Vec<Violation> {
        let content_type = content_type.map(media_type).unwrap_or_default();
        let Some((_, Some(schema))) = self
            .media
            .iter()
            .find(|(accepted, _)| media_matches(accepted, &content_type))
        else {
            return Vec::new();
        };
        let value: Value = match strict_json::parse(body) {
            Ok(value) => value,
            Err(strict_json::StrictError::Syntax(error)) => {
                return vec![violation(
                    "/body",
                    &format!("not valid JSON (line {}, column {})", error.line(), error.column()),
                )]
            }
            Err(strict_json::StrictError::DuplicateKey(pointer)) => {
                return vec![violation(
                    &format!("/body{pointer}"),
                    "duplicate key: parsers disagree on which of its values counts",
                )]
            }
        };
        schema
            .iter_errors(&value)
            .take(self.max_violations)
            .map(|error| {
                violation(
                    &format!("/body{}", error.instance_path().as_str()),
                    &error.masked().to_string(),
                )
            })
            .collect()
    }

    fn media_list(&self) -> String {
        self.media
            .iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Compiler<'a> {
    document: &'a Document,
    options: jsonschema::ValidationOptions,
}

impl<'a> Compiler<'a> {
    fn new(document: &'a Document) -> Self {
        let options = jsonschema::options()
            .with_draft(document.draft)
            .with_resource(BASE, document.resource());
        Self { document, options }
    }

    /// The schema at `pointer` in the document, compiled (its `$ref`s resolve in the document).
    fn schema(&self, pointer: &str) -> Result<Validator, String> {
        let reference = serde_json::json!({ "$ref": format!("{BASE}#{}", fragment(pointer)) });
        self.options
            .build(&reference)
            .map_err(|error| format!("the schema at {pointer} does not compile: {error}"))
    }

    fn operation(&self, located: &Located<'_>, max_violations: usize) -> Result<Operation, String> {
        let method = Method::from_bytes(located.method.to_uppercase().as_bytes()).map_err(|e| e.to_string())?;
        let mut parameters: Vec<Parameter> = Vec::new();
        let sources = [
            (located.path_item, &located.path_pointer),
            (located.operation, &located.operation_pointer),
        ];
        for (owner, owner_pointer) in sources {
            let list = owner.get("parameters").and_then(Value::as_array).into_iter().flatten();
            for (index, raw) in list.enumerate() {
                let pointer = format!("{owner_pointer}/parameters/{index}");
                let (value, pointer) = self.document.resolve(raw, pointer)?;
                let Some(parameter) = Parameter::compile(self, value, &pointer)? else {
                    continue;
                };
                // An operation's parameter overrides the path item's of the same name and place.
                parameters.retain(|p| !(p.name == parameter.name && p.location == parameter.location));
                parameters.push(parameter);
            }
        }
        let body = match located.operation.get("requestBody") {
            Some(raw) => {
                let pointer = format!("{}/requestBody", located.operation_pointer);
                let (value, pointer) = self.document.resolve(raw, pointer)?;
                Some(self.body(value, &pointer, max_violations)?)
            }
            None => None,
        };
        Ok(Operation {
            method,
            parameters,
            body,
        })
    }

    fn body(&self, value: &Value, pointer: &str, max_violations: usize) -> Result<BodyRules, String> {
        let mut media = Vec::new();
        for (media_type, content) in value.get("content").and_then(Value::as_object).into_iter().flatten() {
            let lower = media_type.to_ascii_lowercase();
            let schema = match (is_json(&lower) || lower.ends_with("/*"), content.get("schema")) {
                (true, Some(_)) => {
                    Some(self.schema(&format!("{pointer}/content/{}/schema", document::escape(media_type)))?)
                }
                _ => None,
            };
            media.push((lower, schema));
        }
        Ok(BodyRules {
            required: value.get("required") == Some(&Value::Bool(true)),
            media,
            max_violations: max_violations.max(1),
        })
    }
}

/// A JSON pointer as a URI fragment (RFC 6901 §6): characters a fragment cannot hold, such as the
/// braces of path templates, percent-encoded.
fn fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for byte in pointer.bytes() {
        let plain = byte.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&byte);
        if plain {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn values_named<'v>(pairs: &'v [(String, String)], name: &str) -> Vec<&'v str> {
    pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// `application/json; charset=utf-8` → `application/json`.
fn media_type(header: &str) -> String {
    header.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn media_matches(accepted: &str, actual: &str) -> bool {
    accepted == actual
        || accepted == "*/*"
        || accepted
            .strip_suffix("/*")
            .is_some_and(|kind| actual.split('/').next() == Some(kind))
}

fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

fn violation(pointer: &str, message: &str) -> Violation {
    let mut message = message.to_string();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        message = message.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    Violation {
        pointer: pointer.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::path::Path;

    fn example() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/traffic/orders.openapi.yaml")
    }

    fn validator(operation: Option<&str>, route_path: Option<&str>, reject_unknown_query: bool) -> RouteValidator {
        let config = ValidationConfig {
            openapi: palisade_core::config::unspanned(example()),
            operation: operation.map(|o| palisade_core::config::unspanned(o.to_string())),
            reject_unknown_query,
            max_violations: 10,
        };
        RouteValidator::load(&config, route_path).unwrap_or_else(|e| panic!("loads: {e}"))
    }

    fn view<'a>(
        method: &'a Method,
        params: &'a [(String, String)],
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            method,
            path_params: params,
            query,
            headers,
            has_body: headers.contains_key(http::header::CONTENT_TYPE),
        }
    }

    fn pointers(result: Result<Option<&BodyRules>, Vec<Violation>>) -> Vec<String> {
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.pointer)
            .collect()
    }

    #[test]
    fn query_parameters_are_read_as_their_types_and_checked() {
        let list = validator(Some("listOrders"), None, true);
        let headers = HeaderMap::new();
        let get = Method::GET;
        let ok = view(&get, &[], Some("limit=10&status=open&tag=a&tag=b"), &headers);
        assert!(list.check(&ok).is_ok());
        let bad = view(&get, &[], Some("limit=1000&status=lost&tag=A1&debug=1"), &headers);
        assert_eq!(
            pointers(list.check(&bad)),
            ["/query/limit", "/query/status", "/query/tag/0", "/query/debug"]
        );
        let not_a_number = view(&get, &[], Some("limit=ten"), &headers);
        let violations = list.check(&not_a_number).err().expect("refused");
        assert!(
            !violations[0].message.contains("ten"),
            "values are never echoed: {violations:?}"
        );
    }

    #[test]
    fn path_parameters_come_from_the_route_template() {
        let one = validator(None, Some("/orders/{id}"), false);
        let headers = HeaderMap::new();
        let get = Method::GET;
        let good = [("id".to_string(), "42".to_string())];
        assert!(one.check(&view(&get, &good, None, &headers)).is_ok());
        let bad = [("id".to_string(), "0".to_string())];
        assert_eq!(pointers(one.check(&view(&get, &bad, None, &headers))), ["/path/id"]);
        let delete = Method::DELETE;
        assert_eq!(pointers(one.check(&view(&delete, &good, None, &headers))), ["/method"]);
    }

    #[test]
    fn headers_content_type_and_json_bodies_are_checked() {
        let create = validator(Some("createOrder"), None, false);
        let post = Method::POST;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            pointers(create.check(&view(&post, &[], None, &headers))),
            ["/header/x-tenant-id", "/content-type"]
        );
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert("x-tenant-id", HeaderValue::from_static("t-7"));
        let body = create
            .check(&view(&post, &[], None, &headers))
            .expect("head is fine")
            .expect("the body is checked");
        let json = Some("application/json");
        assert!(body
            .check(json, br#"{"items":[{"sku":"A-1","quantity":2}],"note":null}"#)
            .is_empty());
        let found: Vec<String> = body
            .check(json, br#"{"items":[{"sku":"a 1","quantity":0}],"extra":true}"#)
            .into_iter()
            .map(|v| v.pointer)
            .collect();
        assert!(found.contains(&"/body/items/0/sku".to_string()), "{found:?}");
        assert!(found.contains(&"/body/items/0/quantity".to_string()), "{found:?}");
        assert!(found.contains(&"/body".to_string()), "additionalProperties: {found:?}");
        assert_eq!(body.check(json, b"{not json").len(), 1);
        let empty = HeaderMap::new();
        assert_eq!(
            pointers(create.check(&view(&post, &[], None, &empty))),
            ["/header/x-tenant-id", "/body"]
        );
    }

    #[test]
    fn openapi_3_0_documents_with_nullable_are_understood() {
        let dir = std::env::temp_dir().join(format!("palisade-oas30-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("api.json");
        std::fs::write(
            &file,
            r#"{"openapi":"3.0.3","info":{"title":"t","version":"1"},"paths":{"/p":{"post":{"operationId":"p",
            "requestBody":{"content":{"application/json":{"schema":{"type":"object","properties":{
            "n":{"type":"integer","nullable":true,"maximum":5,"exclusiveMaximum":true}}}}}},"responses":{}}}}}"#,
        )
        .expect("write");
        let config = ValidationConfig {
            openapi: palisade_core::config::unspanned(file),
            operation: Some(palisade_core::config::unspanned("p".to_string())),
            reject_unknown_query: false,
            max_violations: 10,
        };
        let validator = RouteValidator::load(&config, None).expect("3.0 loads");
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let post = Method::POST;
        let body = validator
            .check(&view(&post, &[], None, &headers))
            .expect("ok")
            .expect("body");
        assert!(body.check(Some("application/json"), br#"{"n":null}"#).is_empty());
        assert!(body.check(Some("application/json"), br#"{"n":4}"#).is_empty());
        assert_eq!(body.check(Some("application/json"), br#"{"n":5}"#).len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unknown_operations_and_uncaptured_path_parameters_are_load_errors() {
        let config = ValidationConfig {
            openapi: palisade_core::config::unspanned(example()),
            operation: Some(palisade_core::config::unspanned("nope".to_string())),
            reject_unknown_query: false,
            max_violations: 10,
        };
        let error = RouteValidator::load(&config, None).err().expect("refused").to_string();
        assert!(error.contains("operationId \"nope\""), "{error}");
        let mismatched = ValidationConfig {
            operation: Some(palisade_core::config::unspanned("getOrder".to_string())),
            ..config
        };
        let error = RouteValidator::load(&mismatched, Some("/orders/{order_id}"))
            .err()
            .expect("refused");
        assert!(error.to_string().contains("path parameter \"id\""), "{error}");
    }
}
