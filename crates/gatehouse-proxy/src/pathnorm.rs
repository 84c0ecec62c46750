//! Request path normalization: the router, and every plugin after it, see one canonical form
//! of a path, so `/a/../b`, `/%62`, `//b` cannot slip past a rule written for `/b`.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in path")]
    BadEscape,
    /// Not an origin-form path.
    #[error("path must start with `/`")]
    NotAbsolute,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes a request path: decodes percent-escapes of unreserved characters (others are
/// kept, upper-cased, so `%2F` never becomes a separator), removes `.` and `..` segments and
/// merges repeated slashes. Returns the input unchanged (no allocation) when already canonical.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing that could change.
    let mut suspicious = false;
    for w in b.windows(2) {
        if w[0] == b'/' && (w[1] == b'/' || w[1] == b'.') {
            suspicious = true;
            break;
        }
    }
    if !suspicious && !b.contains(&b'%') {
        return Ok(Cow::Borrowed(path));
    }
    // 1. percent-decoding of unreserved characters.
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (h, l) = match (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            ) {
                (Some(h), Some(l)) => (h, l),
                _ => return Err(PathError::BadEscape),
            };
            let v = h * 16 + l;
            if unreserved(v) {
                decoded.push(v);
            } else {
                decoded.push(b'%');
                decoded.push(b[i + 1].to_ascii_uppercase());
                decoded.push(b[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    // 2. segments: drop empty and `.`, pop on `..`.
    let mut out: Vec<&[u8]> = Vec::new();
    let trailing = decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    for seg in decoded.split(|c| *c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = Vec::with_capacity(decoded.len());
    for seg in &out {
        s.push(b'/');
        s.extend_from_slice(seg);
    }
    if s.is_empty() || (trailing && !out.is_empty()) {
        s.push(b'/');
    }
    // Only ASCII bytes were produced from a &str input plus unchanged bytes, so this is UTF-8.
    Ok(Cow::Owned(
        String::from_utf8(s).map_err(|_| PathError::BadEscape)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn canonical_forms() {
        let n = |p| normalize(p).unwrap().into_owned();
        assert_eq!(n("/a/b"), "/a/b");
        assert!(matches!(
            normalize("/a/b").unwrap(),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(n("/a/../b"), "/b");
        assert_eq!(n("/a/%2e%2e/b"), "/b");
        assert_eq!(n("/a/%2E%2E/b"), "/b");
        assert_eq!(n("//a///b/"), "/a/b/");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(n("/../../x"), "/x");
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/"), "/");
        assert_eq!(n("/.."), "/");
        assert!(normalize("/a%zz").is_err());
        assert!(normalize("/a%2").is_err());
        assert!(normalize("a").is_err());
    }
}
