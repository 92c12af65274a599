//! Kubernetes objects checked against the API's JSON schemas, offline: a directory in the layout
//! `kubernetes-validate` (PyPI) and kubernetes-json-schema ship — one `<kind>-<group>-<version>.json`
//! per object type, with `$ref`s into `_definitions.json`. Strict schemas refuse unknown fields.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jsonschema::{Draft, Resource, Validator};
use serde_json::Value;

/// Where the schemas are registered: their `$ref`s to `/api/_definitions.json` (kubernetes-validate)
/// or `_definitions.json` (kubernetes-json-schema) both resolve to the definitions.
const BASE: &str = "file:///api/";
/// Errors reported per object, at most.
const MAX_ERRORS: usize = 10;

pub struct Schemas {
    dir: PathBuf,
    definitions: Resource,
    compiled: Mutex<HashMap<String, Option<std::sync::Arc<Validator>>>>,
}

/// What the schemas say about one object.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// `path: message` for each violation (at most ten).
    Invalid(Vec<String>),
    /// No schema for this apiVersion and kind (a custom resource): not checked.
    NoSchema(String),
}

impl Schemas {
    pub fn open(dir: &Path) -> Result<Schemas, String> {
        let path = dir.join("_definitions.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (expected a schema directory such as kubernetes-validate's kubernetes-json-schema/v1.31.0-local-strict)",
                path.display()
            )
        })?;
        let definitions: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Schemas {
            dir: dir.to_path_buf(),
            definitions: Draft::Draft202012.create_resource(definitions),
            compiled: Mutex::default(),
        })
    }

    /// The file an object's schema is in: `apps/v1` `Deployment` → `deployment-apps-v1.json`,
    /// `rbac.authorization.k8s.io/v1` → `…-rbac-v1.json`, `v1` → `…-v1.json`.
    pub fn file_name(api_version: &str, kind: &str) -> Option<String> {
        let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !valid(kind) || api_version.is_empty() {
            return None;
        }
        let suffix = match api_version.split_once('/') {
            Some((group, version)) if valid(group) && valid(version) => {
                format!("{}-{version}", group.split('.').next().unwrap_or(group))
            }
            None if valid(api_version) => api_version.to_string(),
            _ => return None,
        };
        Some(format!("{}-{suffix}.json", kind.to_ascii_lowercase()))
    }

    pub fn check(&self, object: &Value) -> Verdict {
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let Some(name) = Self::file_name(api_version, kind) else {
            return Verdict::Invalid(vec!["apiVersion and kind are required".into()]);
        };
        let Some(validator) = self.validator(&name) else {
            return Verdict::NoSchema(format!("{api_version} {kind}"));
        };
        let errors: Vec<String> = validator
            .iter_errors(object)
            .take(MAX_ERRORS)
            .map(|error| {
                let at = error.instance_path().to_string();
                format!("{}: {error}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect();
        if errors.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid(errors)
        }
    }

    fn validator(&self, name: &str) -> Option<std::sync::Arc<Validator>> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = compiled.get(name) {
            return known.clone();
        }
        let built = std::fs::read_to_string(self.dir.join(name))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|mut schema| {
                schema
                    .as_object_mut()?
                    .insert("$id".into(), Value::String(format!("{BASE}{name}")));
                jsonschema::options()
                    .with_draft(Draft::Draft202012)
                    .with_resource(format!("{BASE}_definitions.json"), self.definitions.clone())
                    .build(&schema)
                    .map_err(|error| tracing::warn!(%error, schema = name, "a Kubernetes schema does not compile"))
                    .ok()
            })
            .map(std::sync::Arc::new);
        compiled.insert(name.to_string(), built.clone());
        built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_files_are_named_as_kubernetes_validate_names_them() {
        assert_eq!(
            Schemas::file_name("apps/v1", "Deployment").unwrap(),
            "deployment-apps-v1.json"
        );
        assert_eq!(Schemas::file_name("v1", "ConfigMap").unwrap(), "configmap-v1.json");
        assert_eq!(
            Schemas::file_name("rbac.authorization.k8s.io/v1", "ClusterRole").unwrap(),
            "clusterrole-rbac-v1.json"
        );
        assert_eq!(
            Schemas::file_name("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration").unwrap(),
            "mutatingwebhookconfiguration-admissionregistration-v1.json"
        );
        for (api, kind) in [("../../etc", "passwd"), ("v1", "../x"), ("", "Pod"), ("v1", "")] {
            assert!(Schemas::file_name(api, kind).is_none(), "{api} {kind}");
        }
    }
}
