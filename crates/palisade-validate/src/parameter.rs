//! One path, query or header parameter: where it is, whether it is required, and its schema.
//! Parameter values arrive as text; they are read as the schema's type (`"42"` as the integer 42)
//! before the schema judges them, and arrays are built from repeated (or, with `explode: false`,
//! comma-separated) values.

use jsonschema::Validator;
use serde_json::Value;

use crate::{violation, Compiler, Violation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Path,
    Query,
    Header,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    Integer,
    Number,
    Boolean,
}

pub struct Parameter {
    /// Header names in lower case.
    pub name: String,
    pub location: Location,
    required: bool,
    /// `Some(item shape)` when the schema is an array.
    array_of: Option<Shape>,
    shape: Shape,
    explode: bool,
    schema: Option<Validator>,
}

impl Parameter {
    /// `None` for parameters validation does not cover (cookies).
    pub(crate) fn compile(compiler: &Compiler<'_>, value: &Value, pointer: &str) -> Result<Option<Parameter>, String> {
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the parameter at {pointer} has no name"))?;
        let location = match value.get("in").and_then(Value::as_str) {
            Some("path") => Location::Path,
            Some("query") => Location::Query,
            Some("header") => Location::Header,
            Some("cookie") => return Ok(None),
            other => return Err(format!("parameter {name:?}: unknown location {other:?}")),
        };
        let (schema, array_of, shape) = match value.get("schema") {
            Some(raw) => {
                let (resolved, schema_pointer) = compiler.document.resolve(raw, format!("{pointer}/schema"))?;
                let shape = shape_of(compiler, resolved);
                let array_of = (type_of(resolved) == Some("array")).then(|| {
                    resolved
                        .get("items")
                        .and_then(|items| compiler.document.resolve(items, String::new()).ok())
                        .map_or(Shape::Text, |(items, _)| shape_of(compiler, items))
                });
                (Some(compiler.schema(&schema_pointer)?), array_of, shape)
            }
            None => (None, None, Shape::Text),
        };
        Ok(Some(Parameter {
            name: if location == Location::Header {
                name.to_ascii_lowercase()
            } else {
                name.to_string()
            },
            location,
            required: location == Location::Path || value.get("required") == Some(&Value::Bool(true)),
            array_of,
            shape,
            explode: value
                .get("explode")
                .and_then(Value::as_bool)
                .unwrap_or(location == Location::Query),
            schema,
        }))
    }

    pub(crate) fn check(&self, values: &[&str], violations: &mut Vec<Violation>) {
        let place = match self.location {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
        };
        let pointer = format!("/{place}/{}", crate::document::escape(&self.name));
        if values.is_empty() {
            if self.required {
                violations.push(violation(&pointer, "required"));
            }
            return;
        }
        let value = match self.array_of {
            Some(items) => Value::Array(
                values
                    .iter()
                    .flat_map(|v| if self.explode { vec![*v] } else { v.split(',').collect() })
                    .map(|v| read_as(items, v))
                    .collect(),
            ),
            None if values.len() > 1 => {
                violations.push(violation(&pointer, "given more than once"));
                return;
            }
            None => read_as(self.shape, values[0]),
        };
        if let Some(schema) = &self.schema {
            for error in schema.iter_errors(&value) {
                let at = format!("{pointer}{}", error.instance_path().as_str());
                violations.push(violation(&at, &error.masked().to_string()));
            }
        }
    }
}

fn type_of(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(kind)) => Some(kind),
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).find(|k| *k != "null"),
        _ => None,
    }
}

fn shape_of(compiler: &Compiler<'_>, schema: &Value) -> Shape {
    let schema = compiler
        .document
        .resolve(schema, String::new())
        .map_or(schema, |(s, _)| s);
    match type_of(schema) {
        Some("integer") => Shape::Integer,
        Some("number") => Shape::Number,
        Some("boolean") => Shape::Boolean,
        _ => Shape::Text,
    }
}

/// The text as the type the schema wants; text that does not read as it stays text, so the schema
/// reports the type mismatch.
fn read_as(shape: Shape, text: &str) -> Value {
    let parsed = match shape {
        Shape::Integer => text.parse::<i64>().ok().map(Value::from),
        Shape::Number => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Shape::Boolean => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        Shape::Text => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_string()))
}
