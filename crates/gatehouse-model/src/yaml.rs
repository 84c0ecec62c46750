//! A YAML (and so JSON) loader that remembers where every value came from, so that
//! validation errors can point at a line and column of the user's file.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Line and column (both 1-based) of a value in a source document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// A document parsed into JSON plus the position of every field path in it.
#[derive(Debug, Default)]
pub struct Spanned {
    /// The document as JSON data.
    pub value: Value,
    /// Field path (`services[0].routes[1].paths`) → where that value (or key) starts.
    pub positions: HashMap<String, Position>,
}

impl Spanned {
    /// Finds the position of `path`, falling back to its nearest ancestor that has one.
    pub fn locate(&self, path: &str) -> Option<Position> {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.positions.get(&p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }
}

/// A YAML syntax error with its place in the source.
#[derive(Debug, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What the parser said.
    pub message: String,
}

enum Frame {
    Seq(Vec<Value>, String, usize),
    Map(Map<String, Value>, String, Option<String>, usize),
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    anchors: HashMap<usize, Value>,
    positions: HashMap<String, Position>,
    error: Option<SyntaxError>,
}

fn pos(m: &Marker) -> Position {
    Position {
        line: m.line(),
        column: m.col() + 1,
    }
}

fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let looks_numeric = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.');
    if looks_numeric {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = s.parse::<u64>() {
            return Value::Number(u.into());
        }
        if s.bytes().any(|b| b.is_ascii_digit()) {
            if let Ok(f) = s.parse::<f64>() {
                if let Some(n) = Number::from_f64(f) {
                    return Value::Number(n);
                }
            }
        }
    }
    Value::String(s.to_string())
}

impl Builder {
    fn child_path(&self) -> Option<String> {
        match self.stack.last()? {
            Frame::Seq(items, path, _) => Some(format!("{path}[{}]", items.len())),
            Frame::Map(_, path, Some(key), _) => Some(if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            }),
            Frame::Map(_, _, None, _) => None,
        }
    }

    fn push_value(&mut self, v: Value, anchor: usize, at: Position) {
        if anchor > 0 {
            self.anchors.insert(anchor, v.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq(items, path, _)) => {
                let p = format!("{path}[{}]", items.len());
                self.positions.entry(p).or_insert(at);
                items.push(v);
            }
            Some(Frame::Map(map, path, key, _)) => match key.take() {
                Some(k) => {
                    if map.contains_key(&k) && self.error.is_none() {
                        self.error = Some(SyntaxError {
                            line: at.line,
                            column: at.column,
                            message: format!("duplicate key `{k}`"),
                        });
                    }
                    map.insert(k, v);
                }
                None => {
                    let k = match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.positions.entry(p).or_insert(at);
                    *key = Some(k);
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(&mark);
        match ev {
            Event::Scalar(s, style, anchor, _tag) => {
                let v = if style == TScalarStyle::Plain {
                    resolve_plain(&s)
                } else {
                    Value::String(s)
                };
                if let (Some(Frame::Map(_, _, Some(_), _)), Some(p)) =
                    (self.stack.last(), self.child_path())
                {
                    // Point a scalar field at its value rather than its key.
                    self.positions.insert(p, at);
                }
                self.push_value(v, anchor, at);
            }
            Event::Alias(id) => {
                let v = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                self.push_value(v, 0, at);
            }
            Event::SequenceStart(anchor, _) => {
                let path = self.child_path().unwrap_or_default();
                self.positions.entry(path.clone()).or_insert(at);
                self.stack.push(Frame::Seq(Vec::new(), path, anchor));
            }
            Event::MappingStart(anchor, _) => {
                let path = self.child_path().unwrap_or_default();
                self.positions.entry(path.clone()).or_insert(at);
                self.stack.push(Frame::Map(Map::new(), path, None, anchor));
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, _, anchor)) = self.stack.pop() {
                    self.push_value(Value::Array(items), anchor, at);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(map, _, _, anchor)) = self.stack.pop() {
                    self.push_value(Value::Object(map), anchor, at);
                }
            }
            _ => {}
        }
    }
}

/// Parses YAML or JSON text into a [`Spanned`] value.
pub fn parse(text: &str) -> Result<Spanned, SyntaxError> {
    let mut b = Builder {
        stack: Vec::new(),
        root: None,
        anchors: HashMap::new(),
        positions: HashMap::new(),
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, false).map_err(|e| SyntaxError {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(Spanned {
        value: b.root.unwrap_or(Value::Null),
        positions: b.positions,
    })
}

/// Renders JSON data as a YAML document (used for `GET /config?format=yaml`).
pub fn to_yaml(value: &Value) -> String {
    use yaml_rust2::{Yaml, YamlEmitter};
    fn conv(v: &Value) -> Yaml {
        match v {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(a) => Yaml::Array(a.iter().map(conv).collect()),
            Value::Object(m) => Yaml::Hash(
                m.iter()
                    .map(|(k, v)| (Yaml::String(k.clone()), conv(v)))
                    .collect(),
            ),
        }
    }
    let mut out = String::new();
    let mut em = YamlEmitter::new(&mut out);
    em.multiline_strings(true);
    // Emitting into a String cannot fail except on a fmt error, which String never returns.
    let _ = em.dump(&conv(value));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_types() {
        let s = parse("a: 1\nb:\n  - x: true\n    y: \"2\"\n  - z: ~\n").unwrap();
        assert_eq!(s.value["a"], 1);
        assert_eq!(s.value["b"][0]["x"], true);
        assert_eq!(s.value["b"][0]["y"], "2");
        assert_eq!(s.value["b"][1]["z"], Value::Null);
        assert_eq!(s.positions["b[0].y"], Position { line: 4, column: 8 });
        assert_eq!(s.positions["b[1]"].line, 5);
        assert_eq!(s.locate("b[1].z.deeper").unwrap().line, 5);
    }

    #[test]
    fn json_is_yaml() {
        let s = parse("{\"a\": [1, 2.5, \"x\"]}").unwrap();
        assert_eq!(s.value, serde_json::json!({"a": [1, 2.5, "x"]}));
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1, "{e}");
    }

    #[test]
    fn duplicate_keys_rejected() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn yaml_roundtrip() {
        let v = serde_json::json!({"a": [1, "two", {"b": null}], "c": true});
        let y = to_yaml(&v);
        assert_eq!(parse(&y).unwrap().value, v);
    }
}
