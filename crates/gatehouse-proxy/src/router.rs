//! The route matcher. Compiled once per config snapshot; a lookup walks one segment trie per
//! host class (exact host, wildcard suffixes, any host), so its cost grows with the depth of
//! the path, not with the number of routes.
//!
//! Precedence between routes that all match a request (the first difference decides):
//! 1. higher `priority`;
//! 2. host: exact host > wildcard host (longer suffix first) > no host;
//! 3. path: exact (`=`) > prefix (more segments first, literal segments before `{param}`) >
//!    regex (`~`, higher `regex_priority` first) > no path;
//! 4. more conditions (`methods` counts one, each `headers` entry one);
//! 5. declaration order.

use foldhash::HashMap;
use foldhash::HashMapExt;

use gatehouse_model::pathspec::{self, PathPattern, Segment};
use http::{HeaderMap, Method};
use regex::Regex;

/// What a route matches on, in the form the config gives it.
#[derive(Debug, Clone, Default)]
pub struct RouteSpec {
    /// Host patterns (exact or `*.suffix`), lower case.
    pub hosts: Vec<String>,
    /// Path patterns as written (`/p`, `=/p`, `~rx`).
    pub paths: Vec<String>,
    /// Methods, upper case; empty means any.
    pub methods: Vec<String>,
    /// Header conditions: name → values (`~` prefix for regex).
    pub headers: Vec<(String, Vec<String>)>,
    /// User priority.
    pub priority: i64,
    /// Order among regex paths of the same priority and host class (higher first).
    pub regex_priority: i64,
}

/// Why compiling routes failed.
#[derive(Debug, thiserror::Error)]
#[error("route #{index}: {message}")]
pub struct RouterError {
    /// Index of the route in the input list.
    pub index: usize,
    /// What was wrong.
    pub message: String,
}

/// The result of a successful lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Index of the route in the list given to [`Router::new`].
    pub route: usize,
    /// Length in bytes of the path part that matched (what `strip_path` removes).
    pub matched_len: usize,
    /// Captured `{param}` segments and named regex groups.
    pub params: Vec<(String, String)>,
}

enum HeaderCond {
    Exact(Vec<String>),
    Regex(Vec<Regex>),
}

struct Entry {
    priority: i64,
    regex_priority: i64,
    conditions: u32,
    methods: Vec<Method>,
    headers: Vec<(http::HeaderName, Vec<HeaderCond>)>,
}

enum PathKind {
    Exact,
    Prefix,
}

struct Leaf {
    entry: u32,
    pattern: u32, // index into `patterns` for param extraction
    kind: PathKind,
}

#[derive(Default)]
struct Node {
    lits: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    leaves: Vec<Leaf>,
    regexes: Vec<u32>, // indexes into `regexes`
}

struct RegexRoute {
    entry: u32,
    re: Regex,
}

#[derive(Default)]
struct Table {
    root: Node,
    /// Regex routes without a literal prefix: tried for every request of this host class.
    floating: Vec<u32>,
}

/// Rank of a candidate; greater is better. Fields compared in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    priority: i64,
    host: u32,
    path_class: u8,
    regex_priority: i64,
    depth: u32,
    literals: u32,
    conditions: u32,
    order: std::cmp::Reverse<u32>,
}

const CLASS_NONE: u8 = 0;
const CLASS_REGEX: u8 = 1;
const CLASS_PREFIX: u8 = 2;
const CLASS_EXACT: u8 = 3;

/// Compiled routes of one snapshot.
pub struct Router {
    entries: Vec<Entry>,
    patterns: Vec<Vec<Segment>>,
    regexes: Vec<RegexRoute>,
    exact_hosts: HashMap<Box<str>, Table>,
    wildcard_hosts: HashMap<Box<str>, Table>,
    any_host: Table,
}

struct Best {
    rank: Rank,
    route: usize,
    how: How,
}

enum How {
    Trie { pattern: u32, depth: usize },
    Regex(u32),
    NoPath,
}

/// Byte offset just after the `n`-th segment of a normalized path.
fn prefix_len(path: &str, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let mut seen = 0;
    let b = path.as_bytes();
    for i in 1..b.len() {
        if b[i] == b'/' && b[i - 1] != b'/' {
            seen += 1;
            if seen == n {
                return i;
            }
        }
    }
    path.len()
}

/// The literal prefix of a regex that every match must start with, cut to whole segments.
fn regex_literal_segments(rx: &str) -> Vec<String> {
    if rx.contains('|') || rx.starts_with("(?") {
        return Vec::new();
    }
    let mut lit = String::new();
    let mut chars = rx.chars().peekable();
    while let Some(c) = chars.next() {
        if "\\.+*?()[]{}^$".contains(c) {
            // A quantifier makes the previous character optional.
            if matches!(c, '?' | '*' | '{') {
                lit.pop();
            }
            break;
        }
        lit.push(c);
        if chars.peek().is_none() {
            break;
        }
    }
    match lit.rfind('/') {
        Some(end) => pathspec::split(&lit[..end]).map(str::to_string).collect(),
        None => Vec::new(),
    }
}

impl Router {
    /// Compiles routes; the index of a spec in `specs` is its declaration order.
    pub fn new(specs: &[RouteSpec]) -> Result<Router, RouterError> {
        let mut r = Router {
            entries: Vec::with_capacity(specs.len()),
            patterns: Vec::new(),
            regexes: Vec::new(),
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            any_host: Table::default(),
        };
        for (index, spec) in specs.iter().enumerate() {
            let err = |message: String| RouterError { index, message };
            let methods = spec
                .methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.as_bytes()).map_err(|e| err(format!("method `{m}`: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut headers = Vec::new();
            for (name, values) in &spec.headers {
                let hn = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| err(format!("header `{name}`: {e}")))?;
                let mut exact = Vec::new();
                let mut rx = Vec::new();
                for v in values {
                    match v.strip_prefix('~') {
                        Some(p) => {
                            rx.push(Regex::new(p).map_err(|e| err(format!("header regex: {e}")))?)
                        }
                        None => exact.push(v.to_ascii_lowercase()),
                    }
                }
                let mut conds = Vec::new();
                if !exact.is_empty() {
                    conds.push(HeaderCond::Exact(exact));
                }
                if !rx.is_empty() {
                    conds.push(HeaderCond::Regex(rx));
                }
                headers.push((hn, conds));
            }
            let conditions = u32::from(!methods.is_empty()) + headers.len() as u32;
            let entry = r.entries.len() as u32;
            r.entries.push(Entry {
                priority: spec.priority,
                regex_priority: spec.regex_priority,
                conditions,
                methods,
                headers,
            });

            let mut parsed = Vec::new();
            for p in &spec.paths {
                parsed.push(pathspec::parse(p).map_err(|e| err(format!("path `{p}`: {e}")))?);
            }
            let host_keys: Vec<(u8, String)> = if spec.hosts.is_empty() {
                vec![(0, String::new())]
            } else {
                spec.hosts
                    .iter()
                    .map(|h| match h.strip_prefix("*.") {
                        Some(s) => (1, s.to_string()),
                        None => (2, h.clone()),
                    })
                    .collect()
            };
            for (class, key) in host_keys {
                let table = match class {
                    0 => &mut r.any_host,
                    1 => r.wildcard_hosts.entry(key.into_boxed_str()).or_default(),
                    _ => r.exact_hosts.entry(key.into_boxed_str()).or_default(),
                };
                if parsed.is_empty() {
                    table.root.leaves.push(Leaf {
                        entry,
                        pattern: u32::MAX,
                        kind: PathKind::Prefix,
                    });
                }
                for pat in &parsed {
                    match pat {
                        PathPattern::Exact(segs) | PathPattern::Prefix(segs) => {
                            let pattern = r.patterns.len() as u32;
                            r.patterns.push(segs.clone());
                            let mut node = &mut table.root;
                            for s in segs {
                                node = match s {
                                    Segment::Lit(l) => {
                                        node.lits.entry(l.clone().into_boxed_str()).or_default()
                                    }
                                    Segment::Param(_) => {
                                        node.param.get_or_insert_with(Default::default)
                                    }
                                };
                            }
                            let kind = if matches!(pat, PathPattern::Exact(_)) {
                                PathKind::Exact
                            } else {
                                PathKind::Prefix
                            };
                            node.leaves.push(Leaf {
                                entry,
                                pattern,
                                kind,
                            });
                        }
                        PathPattern::Regex(src) => {
                            let re = Regex::new(&format!("^(?:{src})"))
                                .map_err(|e| err(format!("regex: {e}")))?;
                            let idx = r.regexes.len() as u32;
                            r.regexes.push(RegexRoute { entry, re });
                            let lits = regex_literal_segments(src);
                            if lits.is_empty() {
                                table.floating.push(idx);
                            } else {
                                let mut node = &mut table.root;
                                for l in lits {
                                    node = node.lits.entry(l.into_boxed_str()).or_default();
                                }
                                node.regexes.push(idx);
                            }
                        }
                    }
                }
            }
        }
        Ok(r)
    }

    /// Number of compiled routes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn conditions_hold(&self, e: &Entry, method: &Method, headers: &HeaderMap) -> bool {
        if !e.methods.is_empty() && !e.methods.iter().any(|m| m == method) {
            return false;
        }
        for (name, conds) in &e.headers {
            let ok = headers.get_all(name).iter().any(|v| {
                let Ok(v) = v.to_str() else { return false };
                conds.iter().any(|c| match c {
                    HeaderCond::Exact(list) => list.iter().any(|x| x.eq_ignore_ascii_case(v)),
                    HeaderCond::Regex(list) => list.iter().any(|r| r.is_match(v)),
                })
            });
            if !ok {
                return false;
            }
        }
        true
    }

    /// Finds the best route for a request. `path` must be normalized (see `pathnorm`).
    pub fn find(
        &self,
        host: &str,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Match> {
        let host = host
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let host = host.strip_suffix('.').unwrap_or(host);

        let mut segs_buf: [&str; 32] = [""; 32];
        let mut n = 0;
        let mut overflow = Vec::new();
        for s in pathspec::split(path) {
            if n < 32 {
                segs_buf[n] = s;
            } else {
                if overflow.is_empty() {
                    overflow.extend_from_slice(&segs_buf);
                }
                overflow.push(s);
            }
            n += 1;
        }
        let segs: &[&str] = if overflow.is_empty() {
            &segs_buf[..n]
        } else {
            &overflow
        };

        let mut best: Option<Best> = None;
        if !self.exact_hosts.is_empty() {
            if let Some(t) = self.exact_hosts.get(host) {
                self.search(t, u32::MAX, method, path, segs, headers, &mut best);
            }
        }
        if !self.wildcard_hosts.is_empty() {
            let mut rest = host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(t) = self.wildcard_hosts.get(suffix) {
                    self.search(
                        t,
                        1 + suffix.len() as u32,
                        method,
                        path,
                        segs,
                        headers,
                        &mut best,
                    );
                }
                rest = suffix;
            }
        }
        self.search(&self.any_host, 0, method, path, segs, headers, &mut best);

        let best = best?;
        let (matched_len, params) = match best.how {
            How::NoPath => (0, Vec::new()),
            How::Trie { pattern, depth } => {
                let mut params = Vec::new();
                for (seg, val) in self.patterns[pattern as usize].iter().zip(segs) {
                    if let Segment::Param(name) = seg {
                        params.push((name.clone(), (*val).to_string()));
                    }
                }
                (prefix_len(path, depth), params)
            }
            How::Regex(i) => {
                let re = &self.regexes[i as usize].re;
                let mut params = Vec::new();
                let mut end = 0;
                if let Some(caps) = re.captures(path) {
                    end = caps.get(0).map_or(0, |m| m.end());
                    for name in re.capture_names().flatten() {
                        if let Some(m) = caps.name(name) {
                            params.push((name.to_string(), m.as_str().to_string()));
                        }
                    }
                }
                (end, params)
            }
        };
        Some(Match {
            route: best.route,
            matched_len,
            params,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        t: &Table,
        host: u32,
        method: &Method,
        path: &str,
        segs: &[&str],
        headers: &HeaderMap,
        best: &mut Option<Best>,
    ) {
        let mut regex_cands: [u32; 16] = [0; 16];
        let mut nregex = 0usize;
        let mut extra_regex: Vec<u32> = Vec::new();
        self.walk(
            &t.root,
            0,
            0,
            host,
            segs,
            method,
            headers,
            best,
            &mut regex_cands,
            &mut nregex,
            &mut extra_regex,
        );
        let from_trie = regex_cands[..nregex.min(16)]
            .iter()
            .chain(extra_regex.iter());
        for &i in from_trie.chain(t.floating.iter()) {
            let rr = &self.regexes[i as usize];
            let e = &self.entries[rr.entry as usize];
            let rank = Rank {
                priority: e.priority,
                host,
                path_class: CLASS_REGEX,
                regex_priority: e.regex_priority,
                depth: 0,
                literals: 0,
                conditions: e.conditions,
                order: std::cmp::Reverse(rr.entry),
            };
            if best.as_ref().is_some_and(|b| b.rank >= rank) {
                continue;
            }
            if self.conditions_hold(e, method, headers) && rr.re.is_match(path) {
                *best = Some(Best {
                    rank,
                    route: rr.entry as usize,
                    how: How::Regex(i),
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        node: &Node,
        depth: usize,
        literals: u32,
        host: u32,
        segs: &[&str],
        method: &Method,
        headers: &HeaderMap,
        best: &mut Option<Best>,
        regex_cands: &mut [u32; 16],
        nregex: &mut usize,
        extra: &mut Vec<u32>,
    ) {
        for leaf in &node.leaves {
            let at_end = depth == segs.len();
            let (class, how) = match leaf.kind {
                PathKind::Exact if !at_end => continue,
                PathKind::Exact => (
                    CLASS_EXACT,
                    How::Trie {
                        pattern: leaf.pattern,
                        depth,
                    },
                ),
                PathKind::Prefix if leaf.pattern == u32::MAX => (CLASS_NONE, How::NoPath),
                PathKind::Prefix => (
                    CLASS_PREFIX,
                    How::Trie {
                        pattern: leaf.pattern,
                        depth,
                    },
                ),
            };
            let e = &self.entries[leaf.entry as usize];
            let rank = Rank {
                priority: e.priority,
                host,
                path_class: class,
                regex_priority: 0,
                depth: depth as u32,
                literals,
                conditions: e.conditions,
                order: std::cmp::Reverse(leaf.entry),
            };
            if best.as_ref().is_some_and(|b| b.rank >= rank) {
                continue;
            }
            if self.conditions_hold(e, method, headers) {
                *best = Some(Best {
                    rank,
                    route: leaf.entry as usize,
                    how,
                });
            }
        }
        for &r in &node.regexes {
            if *nregex < 16 {
                regex_cands[*nregex] = r;
            } else {
                extra.push(r);
            }
            *nregex += 1;
        }
        if let Some(seg) = segs.get(depth) {
            if let Some(child) = node.lits.get(*seg) {
                self.walk(
                    child,
                    depth + 1,
                    literals + 1,
                    host,
                    segs,
                    method,
                    headers,
                    best,
                    regex_cands,
                    nregex,
                    extra,
                );
            }
            if let Some(child) = &node.param {
                self.walk(
                    child,
                    depth + 1,
                    literals,
                    host,
                    segs,
                    method,
                    headers,
                    best,
                    regex_cands,
                    nregex,
                    extra,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
