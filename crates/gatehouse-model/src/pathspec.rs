//! Route path patterns: prefix (`/a/{id}`), exact (`=/a`) and regex (`~/a/\d+`).

/// One segment of a literal path pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Must equal this text.
    Lit(String),
    /// Matches any one non-empty segment and captures it under this name.
    Param(String),
}

/// A parsed route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// Matches the path and anything below it, segment-wise (`/a` matches `/a`, `/a/b`, not `/ab`).
    Prefix(Vec<Segment>),
    /// Matches exactly this path.
    Exact(Vec<Segment>),
    /// Matches when the regex matches at the start of the path.
    Regex(String),
}

fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Splits a normalized request path into segments (no leading slash; `/` gives none).
pub fn split(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .filter(|s| !s.is_empty())
}

fn parse_segments(p: &str) -> Result<Vec<Segment>, String> {
    if !p.starts_with('/') {
        return Err("must start with `/` (or `=/` for exact, `~` for regex)".into());
    }
    if let Some(c) = p
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '?' || *c == '#')
    {
        return Err(format!("must not contain {c:?}"));
    }
    let mut names: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for seg in split(p) {
        if seg == "." || seg == ".." {
            return Err("must not contain `.` or `..` segments".into());
        }
        if let Some(inner) = seg.strip_prefix('{') {
            let name = inner.strip_suffix('}').ok_or_else(|| {
                format!("segment `{seg}`: a parameter is a whole segment like `{{id}}`")
            })?;
            if !is_ident(name) {
                return Err(format!(
                    "parameter name `{name}` must be letters, digits and `_`"
                ));
            }
            if names.contains(&name) {
                return Err(format!("parameter `{name}` appears twice"));
            }
            names.push(name);
            out.push(Segment::Param(name.to_string()));
        } else if seg.contains(['{', '}']) {
            return Err(format!(
                "segment `{seg}`: a parameter is a whole segment like `{{id}}`"
            ));
        } else {
            out.push(Segment::Lit(seg.to_string()));
        }
    }
    Ok(out)
}

/// A regex error on one line (the crates' messages draw a multi-line diagram).
pub fn regex_error(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(&text);
    last.trim().trim_start_matches("error: ").to_string()
}

/// Parses a route path as written in the config.
pub fn parse(p: &str) -> Result<PathPattern, String> {
    if let Some(rx) = p.strip_prefix('~') {
        if rx.is_empty() {
            return Err("regex is empty".into());
        }
        // Syntax check only: the router compiles it once, when the snapshot is built (a
        // regex too large to compile is reported from there).
        regex_syntax::Parser::new()
            .parse(&format!("^(?:{rx})"))
            .map_err(|e| format!("invalid regex: {}", regex_error(&e)))?;
        return Ok(PathPattern::Regex(rx.to_string()));
    }
    if let Some(exact) = p.strip_prefix('=') {
        return parse_segments(exact).map(PathPattern::Exact);
    }
    parse_segments(p).map(PathPattern::Prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds() {
        assert_eq!(
            parse("/a/{id}").unwrap(),
            PathPattern::Prefix(vec![Segment::Lit("a".into()), Segment::Param("id".into())])
        );
        assert_eq!(parse("=/").unwrap(), PathPattern::Exact(vec![]));
        assert!(matches!(parse("~/x/\\d+").unwrap(), PathPattern::Regex(_)));
        assert!(parse("a").is_err());
        assert!(parse("/a/{id}/{id}").unwrap_err().contains("twice"));
        assert!(parse("/a/x{id}").is_err());
        assert!(parse("~/(").unwrap_err().contains("invalid regex"));
        assert!(parse("/a/../b").is_err());
    }
}
