//! Prices per million tokens, and what a call costs. Costs are kept in micro-dollars
//! (millionths of a US dollar) so counters and budgets stay integers: a token priced at
//! `p` dollars per million costs exactly `p` micro-dollars.

use gatehouse_model::AiPrice;

use crate::Usage;

/// Dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Input (uncached prompt) tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Prompt tokens read from the cache.
    pub cached_input: f64,
    /// Prompt tokens written to the cache.
    pub cache_write: f64,
}

impl From<&AiPrice> for Price {
    fn from(p: &AiPrice) -> Price {
        Price {
            input: p.input,
            output: p.output,
            cached_input: p.cached_input.unwrap_or(p.input),
            cache_write: p.cache_write.unwrap_or(p.input),
        }
    }
}

const fn p(input: f64, output: f64, cached_input: f64, cache_write: f64) -> Price {
    Price {
        input,
        output,
        cached_input,
        cache_write,
    }
}

/// Built-in prices (USD per million tokens, list prices of late 2025), by model-name
/// prefix; the longest matching prefix wins, so `gpt-4o-mini-2024-07-18` is `gpt-4o-mini`.
/// An `ai_models` entry's `price` overrides this table.
const TABLE: &[(&str, Price)] = &[
    ("gpt-5-nano", p(0.05, 0.40, 0.005, 0.05)),
    ("gpt-5-mini", p(0.25, 2.00, 0.025, 0.25)),
    ("gpt-5", p(1.25, 10.00, 0.125, 1.25)),
    ("gpt-4.1-nano", p(0.10, 0.40, 0.025, 0.10)),
    ("gpt-4.1-mini", p(0.40, 1.60, 0.10, 0.40)),
    ("gpt-4.1", p(2.00, 8.00, 0.50, 2.00)),
    ("gpt-4o-mini", p(0.15, 0.60, 0.075, 0.15)),
    ("gpt-4o", p(2.50, 10.00, 1.25, 2.50)),
    ("gpt-4-turbo", p(10.00, 30.00, 10.00, 10.00)),
    ("gpt-3.5-turbo", p(0.50, 1.50, 0.50, 0.50)),
    ("o4-mini", p(1.10, 4.40, 0.275, 1.10)),
    ("o3-mini", p(1.10, 4.40, 0.55, 1.10)),
    ("o3", p(2.00, 8.00, 0.50, 2.00)),
    ("o1-mini", p(1.10, 4.40, 0.55, 1.10)),
    ("o1", p(15.00, 60.00, 7.50, 15.00)),
    ("text-embedding-3-small", p(0.02, 0.0, 0.02, 0.02)),
    ("text-embedding-3-large", p(0.13, 0.0, 0.13, 0.13)),
    ("text-embedding-ada-002", p(0.10, 0.0, 0.10, 0.10)),
    ("claude-opus-4", p(15.00, 75.00, 1.50, 18.75)),
    ("claude-sonnet-4", p(3.00, 15.00, 0.30, 3.75)),
    ("claude-3-7-sonnet", p(3.00, 15.00, 0.30, 3.75)),
    ("claude-3-5-sonnet", p(3.00, 15.00, 0.30, 3.75)),
    ("claude-haiku-4", p(1.00, 5.00, 0.10, 1.25)),
    ("claude-3-5-haiku", p(0.80, 4.00, 0.08, 1.00)),
    ("claude-3-haiku", p(0.25, 1.25, 0.03, 0.30)),
    ("claude-3-opus", p(15.00, 75.00, 1.50, 18.75)),
    ("gemini-2.5-pro", p(1.25, 10.00, 0.31, 1.25)),
    ("gemini-2.5-flash-lite", p(0.10, 0.40, 0.025, 0.10)),
    ("gemini-2.5-flash", p(0.30, 2.50, 0.075, 0.30)),
    ("gemini-2.0-flash", p(0.10, 0.40, 0.025, 0.10)),
    ("mistral-large", p(2.00, 6.00, 2.00, 2.00)),
    ("mistral-medium", p(0.40, 2.00, 0.40, 0.40)),
    ("mistral-small", p(0.10, 0.30, 0.10, 0.10)),
    ("deepseek-chat", p(0.27, 1.10, 0.07, 0.27)),
    ("deepseek-reasoner", p(0.55, 2.19, 0.14, 0.55)),
    ("grok-4", p(3.00, 15.00, 0.75, 3.00)),
    ("grok-3-mini", p(0.30, 0.50, 0.075, 0.30)),
    ("grok-3", p(3.00, 15.00, 0.75, 3.00)),
    ("llama-3.3-70b", p(0.59, 0.79, 0.59, 0.59)),
    ("llama-3.1-8b", p(0.05, 0.08, 0.05, 0.05)),
];

/// The built-in price of an upstream model name (a `vendor/` prefix, as OpenRouter writes
/// names, is ignored); `None` for models the table does not know (they cost nothing unless
/// their `ai_models` entry sets a price).
pub fn builtin(model: &str) -> Option<Price> {
    let name = model.rsplit('/').next().unwrap_or(model);
    TABLE
        .iter()
        .filter(|(prefix, _)| name.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, price)| *price)
}

impl Price {
    /// The cost of `u` in micro-dollars (rounded up: a budget never loses a fraction).
    pub fn cost_micros(&self, u: &Usage) -> u64 {
        let uncached = u.input.saturating_sub(u.cached_input + u.cache_write) as f64;
        let c = uncached * self.input
            + u.cached_input as f64 * self.cached_input
            + u.cache_write as f64 * self.cache_write
            + u.output as f64 * self.output;
        c.max(0.0).ceil() as u64
    }

    /// The most a call with `input` prompt tokens and at most `max_output` completion
    /// tokens can cost (every input token at the dearest input price), in micro-dollars.
    pub fn worst_case_micros(&self, input: u64, max_output: u64) -> u64 {
        let dearest = self.input.max(self.cached_input).max(self.cache_write);
        (input as f64 * dearest + max_output as f64 * self.output)
            .max(0.0)
            .ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_and_vendor_prefix() {
        assert_eq!(builtin("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(builtin("gpt-4o-2024-08-06").unwrap().input, 2.50);
        assert_eq!(builtin("openai/gpt-4o").unwrap().output, 10.0);
        assert_eq!(
            builtin("claude-sonnet-4-20250514").unwrap().cache_write,
            3.75
        );
        assert!(builtin("my-finetune").is_none());
    }

    #[test]
    fn costs_in_micro_dollars() {
        let price = builtin("claude-sonnet-4").unwrap();
        let u = Usage {
            input: 1_000 + 2_000 + 100,
            cached_input: 2_000,
            cache_write: 100,
            output: 500,
            ..Usage::default()
        };
        // 1000 × 3 + 2000 × 0.3 + 100 × 3.75 + 500 × 15 = 3000 + 600 + 375 + 7500.
        assert_eq!(price.cost_micros(&u), 11_475);
        assert_eq!(
            price.worst_case_micros(1_000, 100),
            1_000 * 3_750 / 1_000 + 1_500
        );
    }
}
