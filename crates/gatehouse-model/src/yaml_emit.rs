//! Our own YAML writer: block style, strings plain only when that is unambiguous, and
//! every character YAML does not allow raw (C0/C1 controls, DEL, BOM, non-characters)
//! escaped — a general emitter wrote such characters raw, which YAML readers refuse.

use serde_json::Value;

/// Renders JSON data as a YAML document.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::from("---\n");
    match value {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => seq(&mut out, a, 0),
        other => {
            scalar(&mut out, other, 2);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn map(out: &mut String, m: &serde_json::Map<String, Value>, level: usize) {
    for (k, v) in m {
        indent(out, level);
        string(out, k, level, false);
        out.push(':');
        child(out, v, level + 2);
    }
}

fn seq(out: &mut String, a: &[Value], level: usize) {
    for v in a {
        indent(out, level);
        out.push('-');
        child(out, v, level + 2);
    }
}

/// A value after `key:` or `-`: nested collections on the next lines, scalars inline.
fn child(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            map(out, m, level);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            seq(out, a, level);
        }
        other => {
            out.push(' ');
            scalar(out, other, level);
            out.push('\n');
        }
    }
}

fn scalar(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => string(out, s, level, true),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

/// Characters YAML 1.2 lets stand unescaped (its `c-printable`, minus the line breaks
/// and BOM, which are only safe escaped).
fn printable(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && c != '\u{feff}'
}

fn string(out: &mut String, s: &str, level: usize, block_ok: bool) {
    if plain_ok(s) {
        out.push_str(s);
    } else if block_ok && literal_ok(s) {
        literal(out, s, level);
    } else {
        quoted(out, s);
    }
}

/// A plain scalar that every YAML reader takes back as this same string.
fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./ ".contains(c))
        && !s.ends_with(' ')
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
}

/// Words some YAML reader takes for a boolean or null.
const RESERVED: [&str; 10] = [
    "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~",
];

/// A `|` block keeps multi-line text (PEM) readable; only for text it can hold exactly.
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars().all(|c| c == '\n' || (printable(c) && c != '\t'))
        && !s.ends_with("\n\n")
        && !s.lines().any(|l| l.ends_with(' '))
}

fn literal(out: &mut String, s: &str, level: usize) {
    out.push_str(if s.ends_with('\n') { "|" } else { "|-" });
    for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(out, level);
            out.push_str(line);
        }
    }
}

fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
}
