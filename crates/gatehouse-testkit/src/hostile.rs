//! Hostile config documents for tests of the loader's limits.

/// `- - - … x`: `depth` nested block sequences in `2 × depth` bytes (a 10 KB one used to
/// overflow the stack of the thread parsing it).
pub fn nested_sequences(depth: usize) -> String {
    "- ".repeat(depth) + "x\n"
}

/// "Billion laughs": nine anchors, each a sequence of nine aliases of the one before — under
/// 500 bytes that expand to 9^9 (387 million) strings.
pub fn alias_bomb() -> String {
    let mut doc = String::from("a: &a [l,l,l,l,l,l,l,l,l]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        doc.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    doc
}
