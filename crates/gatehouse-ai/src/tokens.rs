//! Token estimates for calls whose provider reports no usage (and for reservations made
//! before a call). The estimate errs high: about one token per 3.5 bytes of text, the
//! density of English and code under OpenAI's and Anthropic's tokenizers, and one per byte
//! for text with few ASCII letters (CJK and the like tokenize densely).

use serde_json::Value;

/// Estimated tokens of a text.
pub fn of_text(s: &str) -> u64 {
    if s.is_empty() {
        return 0;
    }
    let ascii = s.bytes().filter(u8::is_ascii).count();
    let other = s.chars().filter(|c| !c.is_ascii()).count();
    (ascii as u64 * 2).div_ceil(7) + other as u64
}

/// Estimated prompt tokens of a request body in either format: the text of every string
/// in it (roles, names and schemas included — they are sent to the model too) plus a few
/// per message, and a flat 1,000 per image.
pub fn of_request(body: &Value) -> u64 {
    fn walk(v: &Value, n: &mut u64) {
        match v {
            Value::String(s) => *n += of_text(s),
            Value::Array(a) => a.iter().for_each(|x| walk(x, n)),
            Value::Object(o) => {
                if matches!(
                    o.get("type").and_then(Value::as_str),
                    Some("image_url" | "image" | "input_image")
                ) {
                    *n += 1_000;
                    return;
                }
                *n += 3;
                o.values().for_each(|x| walk(x, n));
            }
            _ => {}
        }
    }
    let mut n = 0;
    for key in ["messages", "system", "tools", "input", "prompt"] {
        if let Some(v) = body.get(key) {
            walk(v, &mut n);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates_err_high_and_count_images() {
        // "Hello, world" is 3-4 tokens under real tokenizers.
        assert_eq!(of_text("Hello, world"), 4);
        assert_eq!(of_text("你好"), 2);
        let with_image = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]});
        assert!(of_request(&with_image) > 1_000);
    }
}
