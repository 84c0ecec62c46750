//! One usage record, whatever the provider's format.

use serde::Serialize;
use serde_json::Value;

/// Tokens of one call. `input` counts every prompt token, cached ones included (as OpenAI
/// reports it); `cached_input` and `cache_write` say how many of them were read from or
/// written to the provider's prompt cache; `reasoning` is part of `output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens, cache reads and writes included.
    pub input: u64,
    /// Completion tokens, reasoning included.
    pub output: u64,
    /// Prompt tokens read from the cache.
    pub cached_input: u64,
    /// Prompt tokens written to the cache.
    pub cache_write: u64,
    /// Completion tokens spent on reasoning.
    pub reasoning: u64,
    /// True when counted by the gateway (the provider reported none).
    pub estimated: bool,
}

/// True when `v` is a usage object that reports something (`{}` and `null` do not).
pub fn present(v: &Value) -> bool {
    v.as_object().is_some_and(|o| !o.is_empty())
}

fn n(v: &Value, ptr: &str) -> u64 {
    v.pointer(ptr).and_then(Value::as_u64).unwrap_or(0)
}

impl Usage {
    /// From OpenAI's `usage` object (Chat Completions or Embeddings).
    pub fn from_openai(u: &Value) -> Usage {
        Usage {
            input: n(u, "/prompt_tokens"),
            output: n(u, "/completion_tokens"),
            cached_input: n(u, "/prompt_tokens_details/cached_tokens"),
            cache_write: 0,
            reasoning: n(u, "/completion_tokens_details/reasoning_tokens"),
            estimated: false,
        }
    }

    /// From Anthropic's `usage` object, where `input_tokens` excludes cache reads and writes.
    pub fn from_anthropic(u: &Value) -> Usage {
        let read = n(u, "/cache_read_input_tokens");
        let write = n(u, "/cache_creation_input_tokens");
        Usage {
            input: n(u, "/input_tokens") + read + write,
            output: n(u, "/output_tokens"),
            cached_input: read,
            cache_write: write,
            reasoning: 0,
            estimated: false,
        }
    }

    /// Merges a later report of the same call (Anthropic sends input at the start of a
    /// stream and output at its end): each field keeps the larger value.
    pub fn merge(&mut self, later: Usage) {
        self.input = self.input.max(later.input);
        self.output = self.output.max(later.output);
        self.cached_input = self.cached_input.max(later.cached_input);
        self.cache_write = self.cache_write.max(later.cache_write);
        self.reasoning = self.reasoning.max(later.reasoning);
        self.estimated &= later.estimated;
    }

    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input + self.output
    }

    /// In OpenAI's form.
    pub fn to_openai(&self) -> Value {
        serde_json::json!({
            "prompt_tokens": self.input,
            "completion_tokens": self.output,
            "total_tokens": self.total(),
            "prompt_tokens_details": {"cached_tokens": self.cached_input},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning},
        })
    }

    /// In Anthropic's form (input without cache reads and writes).
    pub fn to_anthropic(&self) -> Value {
        serde_json::json!({
            "input_tokens": self.input.saturating_sub(self.cached_input + self.cache_write),
            "output_tokens": self.output,
            "cache_read_input_tokens": self.cached_input,
            "cache_creation_input_tokens": self.cache_write,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_formats_agree() {
        let a = Usage::from_anthropic(&json!({"input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}));
        assert_eq!(
            (a.input, a.cached_input, a.cache_write, a.output),
            (117, 100, 7, 5)
        );
        let o = Usage::from_openai(&a.to_openai());
        assert_eq!((o.input, o.output, o.cached_input), (117, 5, 100));
        assert_eq!(Usage::from_anthropic(&a.to_anthropic()), a);
    }

    #[test]
    fn merge_keeps_the_larger_report() {
        let mut u = Usage::from_anthropic(&json!({"input_tokens": 12, "output_tokens": 1}));
        u.merge(Usage::from_anthropic(&json!({"output_tokens": 40})));
        assert_eq!((u.input, u.output), (12, 40));
    }
}
