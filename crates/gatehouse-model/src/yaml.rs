//! A YAML (and so JSON) loader that remembers where every value came from, so that
//! validation errors can point at a line and column of the user's file.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser};
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

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024 * 1024;
/// Deepest nesting of sequences and mappings accepted (aliases included).
pub const MAX_DEPTH: usize = 64;
/// Most values that aliases may add to a document when expanded (an alias bomb of a few
/// hundred bytes would otherwise expand to gigabytes).
pub const MAX_ALIAS_EXPANSION: usize = 100_000;

/// A sequence or mapping being built: its values, its field path (and, for a mapping, the
/// key waiting for its value), then its [`Shape`] and anchor.
enum Frame {
    Seq(Vec<Value>, String, Shape, usize),
    Map(Map<String, Value>, String, Option<String>, Shape, usize),
}

/// How big a value is: values it holds (itself included) for the alias budget, and levels
/// of nesting for the depth limit (an alias copies both).
#[derive(Clone, Copy)]
struct Shape {
    size: usize,
    depth: usize,
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    /// Anchored values with their shape.
    anchors: HashMap<usize, (Value, Shape)>,
    positions: HashMap<String, Position>,
    error: Option<SyntaxError>,
    expanded: usize,
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
            Frame::Seq(items, path, _, _) => Some(format!("{path}[{}]", items.len())),
            Frame::Map(_, path, Some(key), _, _) => Some(if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            }),
            Frame::Map(_, _, None, _, _) => None,
        }
    }

    fn fail(&mut self, at: Position, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                line: at.line,
                column: at.column,
                message,
            });
        }
    }

    /// Adds a finished value to the enclosing frame.
    fn push_value(&mut self, v: Value, anchor: usize, at: Position, shape: Shape) {
        if anchor > 0 {
            self.anchors.insert(anchor, (v.clone(), shape));
        }
        match self.stack.last_mut() {
            Some(Frame::Seq(_, _, outer, _)) | Some(Frame::Map(_, _, _, outer, _)) => {
                outer.size = outer.size.saturating_add(shape.size);
                outer.depth = outer.depth.max(shape.depth + 1);
            }
            None => {}
        }
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq(items, path, _, _)) => {
                let p = format!("{path}[{}]", items.len());
                self.positions.entry(p).or_insert(at);
                items.push(v);
            }
            Some(Frame::Map(map, path, key, _, _)) => match key.take() {
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

impl Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = pos(&mark);
        match ev {
            Event::Scalar(s, style, anchor, _tag) => {
                let v = if style == TScalarStyle::Plain {
                    resolve_plain(&s)
                } else {
                    Value::String(s)
                };
                if let (Some(Frame::Map(_, _, Some(_), _, _)), Some(p)) =
                    (self.stack.last(), self.child_path())
                {
                    // Point a scalar field at its value rather than its key.
                    self.positions.insert(p, at);
                }
                self.push_value(v, anchor, at, SCALAR);
            }
            Event::Alias(id) => {
                let (v, shape) = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .unwrap_or((Value::Null, SCALAR));
                self.expanded = self.expanded.saturating_add(shape.size);
                if self.expanded > MAX_ALIAS_EXPANSION {
                    return self.fail(
                        at,
                        format!(
                            "aliases expand to more than {MAX_ALIAS_EXPANSION} values (an alias bomb?)"
                        ),
                    );
                }
                if self.stack.len() + shape.depth > MAX_DEPTH {
                    return self.fail(at, format!("nesting deeper than {MAX_DEPTH} levels"));
                }
                self.push_value(v, 0, at, shape);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(at, format!("nesting deeper than {MAX_DEPTH} levels"));
                }
                let path = self.child_path().unwrap_or_default();
                self.positions.entry(path.clone()).or_insert(at);
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq(Vec::new(), path, SCALAR, anchor)
                } else {
                    Frame::Map(Map::new(), path, None, SCALAR, anchor)
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(items, _, shape, anchor)) => {
                    self.push_value(Value::Array(items), anchor, at, shape)
                }
                Some(Frame::Map(map, _, _, shape, anchor)) => {
                    self.push_value(Value::Object(map), anchor, at, shape)
                }
                None => {}
            },
            _ => {}
        }
    }
}

/// The shape of a scalar (and of an empty collection before its values arrive).
const SCALAR: Shape = Shape { size: 1, depth: 0 };

/// Parses YAML or JSON text (one document) into a [`Spanned`] value. The document is
/// bounded before it is built: size, nesting depth and alias expansion, so a hostile
/// document gets an error rather than the node's stack or memory.
pub fn parse(text: &str) -> Result<Spanned, SyntaxError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(SyntaxError {
            line: 1,
            column: 1,
            message: format!(
                "the document is larger than {} MiB",
                MAX_DOCUMENT_BYTES / (1024 * 1024)
            ),
        });
    }
    let mut b = Builder {
        stack: Vec::new(),
        root: None,
        anchors: HashMap::new(),
        positions: HashMap::new(),
        error: None,
        expanded: 0,
    };
    // Events are pulled one by one: yaml-rust2's own `load` recurses once per nesting level
    // (a 10 KB document of `- - - …` overflowed the stack).
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| SyntaxError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        match ev {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        line: mark.line(),
                        column: mark.col() + 1,
                        message: "only one YAML document is allowed".into(),
                    });
                }
            }
            ev => b.on_event(ev, mark),
        }
        if let Some(e) = b.error.take() {
            return Err(e);
        }
    }
    Ok(Spanned {
        value: b.root.unwrap_or(Value::Null),
        positions: b.positions,
    })
}

/// Renders JSON data as a YAML document (used for `GET /config?format=yaml`).
pub fn to_yaml(value: &Value) -> String {
    crate::yaml_emit::to_yaml(value)
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
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // A 10 KB document of nested block sequences and one of flow sequences: both used to
        // overflow the control thread's stack (yaml-rust2's `load` recurses per level).
        let block: String = "- ".repeat(5000) + "x\n";
        let e = parse(&block).unwrap_err();
        assert!(e.message.contains("nesting deeper than 64"), "{e}");
        let flow = "[".repeat(100_000) + &"]".repeat(100_000);
        let e = parse(&flow).unwrap_err();
        // yaml-rust2's scanner has a flow-level limit of its own; either error will do.
        assert!(
            e.message.contains("nesting deeper") || e.message.contains("recursion limit"),
            "{e}"
        );
        let ok = "a:\n  b: [[[[1]]]]\n";
        assert!(parse(ok).is_ok());
        let at_limit = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&at_limit).is_ok());
        let over = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&over).is_err());
    }

    #[test]
    fn alias_bombs_are_refused() {
        // "Billion laughs", 390 bytes: nine anchors of nine aliases each (9^9 strings).
        let doc = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n\
                   b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
                   c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n\
                   d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
                   e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n\
                   f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n\
                   g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n\
                   h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n\
                   i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
        assert!(doc.len() < 1000);
        let e = parse(doc).unwrap_err();
        assert!(e.message.contains("alias bomb"), "{e}");
        // Aliases that nest deep are caught by the depth limit.
        let mut deep = String::from("a0: &a0 [1]\n");
        for i in 1..40 {
            deep.push_str(&format!("a{i}: &a{i} [*a{}, *a{}]\n", i - 1, i - 1));
        }
        assert!(parse(&deep).is_err());
        // Ordinary anchors still work.
        let s = parse("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(s.value["other"]["x"], 1);
    }

    #[test]
    fn one_document_only() {
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("one YAML document"), "{e}");
        assert_eq!(parse("").unwrap().value, Value::Null);
    }

    #[test]
    fn yaml_roundtrip() {
        let v = serde_json::json!({"a": [1, "two", {"b": null}], "c": true});
        let y = to_yaml(&v);
        assert_eq!(parse(&y).unwrap().value, v);
        // What a hostile or careless writer can put in a string comes back as it was.
        let odd = serde_json::json!({
            "pem": "-----BEGIN X-----\nAAAA\n-----END X-----\n",
            "no-final-newline": "a\nb",
            "two-final-newlines": "a\n\n",
            "leading space": "  x\ny",
            "controls": "a\u{95}b\u{7}c\u{1b}\u{7f}\u{85}\u{2028}\u{feff}",
            "": "",
            "yes": ["no", "null", "~", "1.5", "0x1F", "-", "- a", "a: b", "#c", "'q'", "\"", " t", "t "],
            "nested": [[1, [2]], {}, [], {"k": {"j": [true, false, null, -3, 2.5]}}],
        });
        let y = to_yaml(&odd);
        assert!(
            !y.contains('\u{95}') && !y.contains('\u{7}') && !y.contains('\u{feff}'),
            "{y}"
        );
        assert_eq!(parse(&y).unwrap().value, odd, "{y}");
    }
}
