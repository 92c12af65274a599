//! YAML documents as a small tree that remembers lines, so that every Kubernetes and Palisade
//! config finding can name the line to fix. Parsed with saphyr, which bounds alias expansion
//! (no billion-laughs blow-up from a hostile manifest).

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line where the node starts.
    pub line: usize,
    pub value: Value,
}

static NULL: Node = Node {
    line: 0,
    value: Value::Null,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Deeper documents are refused before parsing: the parser and the tree are recursive, and a
/// hostile file must not overflow the stack. Kubernetes objects nest about 15 levels.
pub const MAX_DEPTH: usize = 64;

/// Every document of a (multi-document) YAML stream.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, YamlError> {
    if let Some(line) = too_deep(text) {
        return Err(YamlError {
            line,
            column: 1,
            message: format!("nested deeper than {MAX_DEPTH} levels; not parsed"),
        });
    }
    let documents = MarkedYaml::load_from_str(text).map_err(|error| YamlError {
        line: error.marker().line(),
        column: error.marker().col() + 1,
        message: error.info().to_string(),
    })?;
    Ok(documents.iter().map(convert).collect())
}

/// The first line where block indentation levels plus open flow brackets (`[`, `{`) plus
/// sequence dashes on one line exceed [`MAX_DEPTH`]. Conservative: quotes are not tracked, so a
/// bracket inside a string counts too.
fn too_deep(text: &str) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow: usize = 0;
    for (index, line) in text.lines().enumerate() {
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        if flow == 0 {
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let dashes = content
            .split_inclusive("- ")
            .take_while(|part| part.trim() == "-")
            .count();
        for byte in content.bytes() {
            match byte {
                b'[' | b'{' => flow += 1,
                b']' | b'}' => flow = flow.saturating_sub(1),
                _ => {}
            }
            if indents.len() + flow + dashes > MAX_DEPTH {
                return Some(index + 1);
            }
        }
        if indents.len() + dashes > MAX_DEPTH {
            return Some(index + 1);
        }
    }
    None
}

fn convert(node: &MarkedYaml<'_>) -> Node {
    let value = match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar),
        YamlData::Sequence(items) => Value::Seq(items.iter().map(convert).collect()),
        YamlData::Mapping(entries) => Value::Map(merged(
            entries
                .iter()
                .map(|(key, value)| (key_text(key), convert(value)))
                .collect(),
        )),
        YamlData::Tagged(_, inner) => return convert(inner),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        _ => Value::Null,
    };
    Node {
        line: node.span.start.line(),
        value,
    }
}

/// YAML 1.1 merge keys (`<<: *defaults`, or a list of them), which kubectl's YAML reader
/// applies and YAML 1.2 parsers leave as a plain key: the keys written beside `<<` win, then the
/// merged mappings in order. Without this a privileged flag set through an anchor went unseen.
fn merged(entries: Vec<(String, Node)>) -> Vec<(String, Node)> {
    if !entries.iter().any(|(key, _)| key == "<<") {
        return entries;
    }
    let mut own = Vec::new();
    let mut sources = Vec::new();
    for (key, value) in entries {
        if key == "<<" {
            match value.value {
                Value::Map(map) => sources.push(map),
                Value::Seq(items) => sources.extend(items.into_iter().filter_map(|item| match item.value {
                    Value::Map(map) => Some(map),
                    _ => None,
                })),
                _ => {}
            }
        } else {
            own.push((key, value));
        }
    }
    for source in sources {
        for (key, value) in source {
            if !own.iter().any(|(k, _)| *k == key) {
                own.push((key, value));
            }
        }
    }
    own
}

fn scalar_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

fn key_text(key: &MarkedYaml<'_>) -> String {
    match convert(key).value {
        Value::String(s) => s,
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Float(f) => f.to_string(),
        _ => String::new(),
    }
}

impl Node {
    /// The value under `key` in a mapping; a null node (line 0) when absent or not a mapping.
    pub fn get(&self, key: &str) -> &Node {
        self.entry(key).unwrap_or(&NULL)
    }

    pub fn entry(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a path of keys: `node.at(&["spec", "template", "spec"])`.
    pub fn at(&self, path: &[&str]) -> &Node {
        path.iter().fold(self, |node, key| node.get(key))
    }

    pub fn is_present(&self) -> bool {
        !matches!(self.value, Value::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar as text (numbers and booleans too): what a human wrote.
    pub fn text(&self) -> Option<String> {
        match &self.value {
            Value::String(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// YAML 1.1's booleans too (`yes`, `on`, `y`…): kubectl's YAML reader takes
    /// `privileged: yes` as true, so a check must as well.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => Some(true),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match &self.value {
            Value::Int(i) => Some(*i),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn entries(&self) -> &[(String, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The node's line, or `fallback` when the node is absent (a missing key is reported where
    /// its parent is).
    pub fn line_or(&self, fallback: usize) -> usize {
        if self.line == 0 {
            fallback
        } else {
            self.line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_remembered_across_documents() {
        let docs = parse_documents("a: 1\n---\nb:\n  c: [x, y]\n  d: true\n").expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].at(&["b", "d"]).line, 5);
        assert_eq!(docs[1].at(&["b", "d"]).as_bool(), Some(true));
        assert_eq!(docs[1].at(&["b", "c"]).items()[1].as_str(), Some("y"));
        assert!(!docs[1].at(&["b", "missing", "deeper"]).is_present());
    }

    #[test]
    fn merge_keys_and_yaml_1_1_booleans_read_as_kubectl_reads_them() {
        let text = "base: &privileged {privileged: yes, runAsUser: 0}\nsc:\n  <<: *privileged\n  runAsUser: 1000\nlist:\n  <<: [{a: 1}, {a: 2, b: on}]\n";
        let docs = parse_documents(text).unwrap();
        let sc = docs[0].get("sc");
        assert_eq!(sc.get("privileged").as_bool(), Some(true));
        assert_eq!(
            sc.get("runAsUser").as_int(),
            Some(1000),
            "the key written beside << wins"
        );
        assert!(sc.entry("<<").is_none());
        let list = docs[0].get("list");
        assert_eq!(list.get("a").as_int(), Some(1), "the first merged mapping wins");
        assert_eq!(list.get("b").as_bool(), Some(true));
        assert_eq!(docs[0].at(&["base", "privileged"]).as_bool(), Some(true));
        assert_eq!(parse_documents("x: off").unwrap()[0].get("x").as_bool(), Some(false));
        assert_eq!(parse_documents("x: maybe").unwrap()[0].get("x").as_bool(), None);
    }

    #[test]
    fn an_alias_bomb_is_refused_not_expanded() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let prev = (b'a' + level - 1) as char;
            let name = (b'a' + level) as char;
            bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert!(parse_documents(&bomb).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        assert!(parse_documents(&format!("{}{}", "[".repeat(100), "]".repeat(100))).is_err());
        let block: String = (0..100).map(|depth| format!("{}a:\n", " ".repeat(depth))).collect();
        assert!(parse_documents(&block).is_err());
        assert!(parse_documents(&"- ".repeat(100)).is_err());
        let fine: String = (0..30).map(|depth| format!("{}a:\n", "  ".repeat(depth))).collect();
        assert!(parse_documents(&fine).is_ok());
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let error = parse_documents("a: [1, 2\nb: c\n").expect_err("unclosed");
        assert!(error.line >= 1, "{error:?}");
    }
}
