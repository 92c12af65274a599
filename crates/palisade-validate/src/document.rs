//! An OpenAPI document as loaded for validation: the raw JSON tree (schemas are compiled from it, so
//! their `$ref`s resolve inside the same document), its dialect, and lookups of operations and local
//! references. 3.1 documents are also read into `oas3`'s typed model, which refuses structural
//! mistakes at load.

use std::path::Path;

use jsonschema::{Draft, Resource};
use palisade_core::{ConfigErrors, Diagnostic};
use serde_json::Value;

/// The URI the document is registered under; schemas refer into it as `BASE#/pointer`.
pub const BASE: &str = "urn:palisade:openapi";

pub const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

pub struct Document {
    pub root: Value,
    pub draft: Draft,
    pub file: String,
}

/// One operation: its method, and where its path item and its object are in the document.
pub struct Located<'a> {
    pub method: &'a str,
    pub path_item: &'a Value,
    pub path_pointer: String,
    pub operation: &'a Value,
    pub operation_pointer: String,
}

impl Document {
    pub fn load(path: &Path) -> Result<Document, ConfigErrors> {
        let root: Value = palisade_core::load_yaml_file(path)?;
        let file = path.display().to_string();
        let version = root
            .get("openapi")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut document = if version.starts_with("3.1") {
            if let Err(error) = serde_json::from_value::<oas3::Spec>(root.clone()) {
                return Err(fail(&file, format!("not a valid OpenAPI 3.1 document: {error}")));
            }
            Document {
                root,
                draft: Draft::Draft202012,
                file,
            }
        } else if version.starts_with("3.0") {
            Document {
                root,
                draft: Draft::Draft4,
                file,
            }
        } else {
            return Err(fail(
                &file,
                format!("openapi {version:?}: only 3.0.x and 3.1.x documents are supported"),
            ));
        };
        if document.draft == Draft::Draft4 {
            nullable_to_type(&mut document.root);
        }
        Ok(document)
    }

    pub fn resource(&self) -> Resource {
        self.draft.create_resource(self.root.clone())
    }

    /// Operations with this `operationId` (at most one in a valid document).
    pub fn by_operation_id(&self, id: &str) -> Vec<Located<'_>> {
        let mut found = Vec::new();
        for (template, item) in self.paths() {
            found.extend(operations_of(template, item).filter(|op| op.operation["operationId"] == id));
        }
        found
    }

    /// Every operation under the path template `template`.
    pub fn by_path(&self, template: &str) -> Vec<Located<'_>> {
        self.paths()
            .filter(|(path, _)| *path == template)
            .flat_map(|(path, item)| operations_of(path, item))
            .collect()
    }

    fn paths(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.root
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(path, item)| (path.as_str(), item))
    }

    /// Follows a local `$ref` (`#/components/...`) to its target and pointer; any other value is
    /// returned as it is, with `pointer`.
    pub fn resolve<'a>(&'a self, value: &'a Value, pointer: String) -> Result<(&'a Value, String), String> {
        let mut current = (value, pointer);
        // Bounded: a chain of references longer than this is a loop or an abuse.
        for _ in 0..16 {
            let Some(reference) = current.0.get("$ref").and_then(Value::as_str) else {
                return Ok(current);
            };
            let target = reference
                .strip_prefix('#')
                .ok_or_else(|| format!("{reference:?}: only references inside the document (#/...) are supported"))?;
            let value = self
                .root
                .pointer(target)
                .ok_or_else(|| format!("{reference:?} does not point at anything in the document"))?;
            current = (value, target.to_string());
        }
        Err("a $ref chain is too long (a loop?)".into())
    }
}

fn operations_of<'a>(template: &str, item: &'a Value) -> impl Iterator<Item = Located<'a>> {
    let path_pointer = format!("/paths/{}", escape(template));
    METHODS.iter().filter_map(move |method| {
        let operation = item.get(*method)?;
        Some(Located {
            method,
            path_item: item,
            path_pointer: path_pointer.clone(),
            operation,
            operation_pointer: format!("{path_pointer}/{method}"),
        })
    })
}

/// JSON pointer escaping of one reference token (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// OpenAPI 3.0's `nullable: true` is not JSON Schema; the schema validator understands it as
/// `type: [T, "null"]`.
fn nullable_to_type(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(kind)) = object.get("type").cloned() {
                    object.insert("type".into(), serde_json::json!([kind, "null"]));
                }
            }
            object.values_mut().for_each(nullable_to_type);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_type),
        _ => {}
    }
}

pub fn fail(file: &str, message: String) -> ConfigErrors {
    ConfigErrors(vec![Diagnostic {
        file: file.to_string(),
        line: 0,
        column: 0,
        message,
    }])
}
