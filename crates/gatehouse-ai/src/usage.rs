//! One usage record, whatever the provider's format.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
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

    /// From Gemini's `usageMetadata`: the prompt count includes cached tokens; thinking
    /// tokens are billed as output but reported apart.
    pub fn from_gemini(u: &Value) -> Usage {
        let thoughts = n(u, "/thoughtsTokenCount");
        Usage {
            input: n(u, "/promptTokenCount") + n(u, "/toolUsePromptTokenCount"),
            output: n(u, "/candidatesTokenCount") + thoughts,
            cached_input: n(u, "/cachedContentTokenCount"),
            cache_write: 0,
            reasoning: thoughts,
            estimated: false,
        }
    }

    /// From Bedrock Converse's `usage`, where `inputTokens` excludes cache reads and writes.
    pub fn from_bedrock(u: &Value) -> Usage {
        let read = n(u, "/cacheReadInputTokens");
        let write = n(u, "/cacheWriteInputTokens");
        Usage {
            input: n(u, "/inputTokens") + read + write,
            output: n(u, "/outputTokens"),
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

#[derive(Deserialize, Default)]
struct Cached {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize, Default)]
struct Reasoning {
    #[serde(default)]
    reasoning_tokens: u64,
}

/// A usage object of either format, read without building a JSON tree.
#[derive(Deserialize, Default)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<Cached>,
    completion_tokens_details: Option<Reasoning>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

/// The parts of a whole answer the gateway needs when it passes the answer on unchanged:
/// whether the expected list is there, and the usage.
#[derive(Deserialize)]
pub struct Peek {
    choices: Option<IgnoredAny>,
    content: Option<IgnoredAny>,
    data: Option<IgnoredAny>,
    usage: Option<WireUsage>,
}

impl Peek {
    /// Reads an answer body; `None` when it is not a JSON object.
    pub fn of(body: &[u8]) -> Option<Peek> {
        serde_json::from_slice(body).ok()
    }
    /// True when the answer has field `name` (`choices`, `content` or `data`).
    pub fn has(&self, name: &str) -> bool {
        match name {
            "choices" => self.choices.is_some(),
            "content" => self.content.is_some(),
            "data" => self.data.is_some(),
            _ => false,
        }
    }
    /// The usage, if the answer reports any.
    pub fn usage(&self) -> Option<Usage> {
        let u = self.usage.as_ref()?;
        if let Some(input) = u.input_tokens.or(u.output_tokens.map(|_| 0)) {
            let read = u.cache_read_input_tokens.unwrap_or(0);
            let write = u.cache_creation_input_tokens.unwrap_or(0);
            return Some(Usage {
                input: input + read + write,
                output: u.output_tokens.unwrap_or(0),
                cached_input: read,
                cache_write: write,
                reasoning: 0,
                estimated: false,
            });
        }
        if u.prompt_tokens.is_none() && u.completion_tokens.is_none() {
            return None;
        }
        Some(Usage {
            input: u.prompt_tokens.unwrap_or(0),
            output: u.completion_tokens.unwrap_or(0),
            cached_input: u
                .prompt_tokens_details
                .as_ref()
                .map_or(0, |d| d.cached_tokens),
            cache_write: 0,
            reasoning: u
                .completion_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
            estimated: false,
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
    fn peek_reads_usage_of_both_formats() {
        let o = Peek::of(br#"{"choices":[{"x":1}],"usage":{"prompt_tokens":5,"completion_tokens":2,
            "prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":1}}}"#).unwrap();
        assert!(o.has("choices") && !o.has("content"));
        let u = o.usage().unwrap();
        assert_eq!(
            (u.input, u.output, u.cached_input, u.reasoning),
            (5, 2, 3, 1)
        );
        let a = Peek::of(br#"{"content":[],"usage":{"input_tokens":4,"output_tokens":6,"cache_read_input_tokens":10}}"#).unwrap();
        assert_eq!(
            a.usage().unwrap(),
            Usage::from_anthropic(
                &serde_json::json!({"input_tokens":4,"output_tokens":6,"cache_read_input_tokens":10})
            )
        );
        assert!(Peek::of(b"{\"choices\":[]}").unwrap().usage().is_none());
        assert!(Peek::of(b"<html>").is_none());
    }

    #[test]
    fn merge_keeps_the_larger_report() {
        let mut u = Usage::from_anthropic(&json!({"input_tokens": 12, "output_tokens": 1}));
        u.merge(Usage::from_anthropic(&json!({"output_tokens": 40})));
        assert_eq!((u.input, u.output), (12, 40));
    }
}
