//! Reading a policy set: the schema, the policy files, validation, and errors that point at the
//! file, line and column Cedar blamed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use palisade_core::config::PolicySetConfig;
use palisade_core::{ConfigErrors, Diagnostic};

/// A validated set: the schema, the policies and their display names.
pub struct LoadedSet {
    pub schema: Schema,
    pub policies: PolicySet,
    /// Display ids (`@id("…")` annotation, or `file.cedar#N`) by Cedar's own policy id.
    pub names: HashMap<PolicyId, Arc<str>>,
}

pub fn load_set(name: &str, settings: &PolicySetConfig) -> Result<LoadedSet, ConfigErrors> {
    let schema_path = &settings.schema.value;
    let schema_text = read(schema_path)?;
    let schema = Schema::from_cedarschema_str(&schema_text)
        .map(|(schema, _warnings)| schema)
        .map_err(|error| {
            located(
                schema_path,
                &schema_text,
                &error,
                format!("policy set {name:?}: {error}"),
            )
        })?;
    let mut policies = PolicySet::new();
    let mut names = HashMap::new();
    // Each file's path and text once; policies point at their file by index.
    let mut sources: Vec<(PathBuf, String)> = Vec::new();
    let mut file_of = HashMap::new();
    for (file_index, file) in settings.files.iter().enumerate() {
        let text = read(&file.value)?;
        let parsed =
            PolicySet::from_str(&text).map_err(|error| located(&file.value, &text, &error, format!("{error}")))?;
        let stem = file
            .value
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if parsed.templates().next().is_some() {
            return Err(general(
                &file.value,
                "policy templates are not supported; write plain policies".into(),
            ));
        }
        for (index, policy) in parsed.policies().enumerate() {
            let display = policy
                .annotation("id")
                .map_or_else(|| format!("{stem}#{}", index + 1), str::to_string);
            // Unique even when two files share a name; the display name is what people see.
            let id = PolicyId::new(format!("{file_index}/{stem}#{}", index + 1));
            let renamed = policy.new_id(id.clone());
            policies
                .add(renamed)
                .map_err(|error| general(&file.value, format!("{error}")))?;
            names.insert(id.clone(), Arc::from(display));
            file_of.insert(id, file_index);
        }
        sources.push((file.value.clone(), text));
    }
    let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
    if !validation.validation_passed() {
        let errors = validation
            .validation_errors()
            .filter_map(|error| {
                let (path, text) = sources.get(*file_of.get(error.policy_id())?)?;
                let policy = names.get(error.policy_id())?;
                let message = format!("policy {policy} does not match the schema: {error}");
                Some(located_diagnostic(path, text, error, message))
            })
            .collect::<Vec<_>>();
        if errors.is_empty() {
            return Err(general(
                schema_path,
                format!("policy set {name:?} does not match its schema"),
            ));
        }
        return Err(ConfigErrors(errors));
    }
    Ok(LoadedSet {
        schema,
        policies,
        names,
    })
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| general(path, format!("cannot read: {}", e.kind())))
}

pub fn general(path: &Path, message: String) -> ConfigErrors {
    ConfigErrors(vec![Diagnostic {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message,
    }])
}

fn located(path: &Path, text: &str, error: &dyn miette::Diagnostic, message: String) -> ConfigErrors {
    ConfigErrors(vec![located_diagnostic(path, text, error, message)])
}

/// The first labelled span of a Cedar error, as `line:column` in `text`.
fn located_diagnostic(path: &Path, text: &str, error: &dyn miette::Diagnostic, message: String) -> Diagnostic {
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = offset.map_or((0, 0), |offset| line_column(text, offset));
    Diagnostic {
        file: path.display().to_string(),
        line,
        column,
        message: message.lines().next().unwrap_or_default().to_string(),
    }
}

fn line_column(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |newline| before.len() - newline - 1)
        + 1;
    (line as u64, column as u64)
}
