//! Per provider kind: the wire format it speaks, where its endpoints are and how a key is
//! presented.

use gatehouse_model::{AiProvider, AiProviderKind};
use http::{HeaderName, HeaderValue};

/// The API format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions (and every OpenAI-compatible server).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// Anthropic's API version header value.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Azure OpenAI's `api-version` when the provider sets none.
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// What a call needs to know of its provider.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The kind.
    pub kind: AiProviderKind,
    /// Wire format.
    pub wire: Wire,
    /// Base URL without a trailing `/`.
    pub base: String,
    /// Azure's `api-version`.
    pub api_version: String,
}

/// The operation a call performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Chat (Chat Completions or Messages, by wire).
    Chat,
    /// Embeddings.
    Embeddings,
}

impl Endpoint {
    /// The endpoint of a provider entity.
    pub fn of(p: &AiProvider) -> Endpoint {
        let base = p
            .base_url
            .as_deref()
            .or(p.kind.default_base_url())
            .unwrap_or("")
            .trim_end_matches('/')
            .to_string();
        Endpoint {
            kind: p.kind,
            wire: if p.kind == AiProviderKind::Anthropic {
                Wire::Anthropic
            } else {
                Wire::OpenAi
            },
            base,
            api_version: p
                .api_version
                .clone()
                .unwrap_or_else(|| AZURE_API_VERSION.to_string()),
        }
    }

    /// The URL of `op` for upstream model `model`; `None` when the provider has no such
    /// endpoint.
    pub fn url(&self, op: Op, model: &str) -> Option<String> {
        match (self.kind, op) {
            (AiProviderKind::Anthropic, Op::Chat) => Some(format!("{}/messages", self.base)),
            (AiProviderKind::Anthropic, Op::Embeddings) => None,
            (AiProviderKind::AzureOpenai, op) => Some(format!(
                "{}/openai/deployments/{}/{}?api-version={}",
                self.base,
                percent_encode_segment(model),
                match op {
                    Op::Chat => "chat/completions",
                    Op::Embeddings => "embeddings",
                },
                self.api_version
            )),
            (_, Op::Chat) => Some(format!("{}/chat/completions", self.base)),
            (_, Op::Embeddings) => Some(format!("{}/embeddings", self.base)),
        }
    }

    /// The headers that present `key` (none for a keyless server).
    pub fn auth_headers(&self, key: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        if self.wire == Wire::Anthropic {
            out.push((
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            ));
        }
        let Some(key) = key else {
            return out;
        };
        let (name, value) = match self.kind {
            AiProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), key.to_string()),
            AiProviderKind::AzureOpenai => (HeaderName::from_static("api-key"), key.to_string()),
            _ => (http::header::AUTHORIZATION, format!("Bearer {key}")),
        };
        if let Ok(mut v) = HeaderValue::from_str(&value) {
            v.set_sensitive(true);
            out.push((name, v));
        }
        out
    }
}

/// A model name as one path segment (Azure deployments).
fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(kind: AiProviderKind, base: Option<&str>) -> AiProvider {
        serde_json::from_value(serde_json::json!({
            "name": "p", "kind": kind, "base_url": base, "keys": [{"key": "k"}]
        }))
        .unwrap()
    }

    #[test]
    fn urls_and_auth_per_kind() {
        let e = Endpoint::of(&provider(AiProviderKind::Openai, None));
        assert_eq!(
            e.url(Op::Chat, "gpt-4o").unwrap(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(e.auth_headers(Some("sk")).last().unwrap().1, "Bearer sk");
        let a = Endpoint::of(&provider(AiProviderKind::Anthropic, None));
        assert_eq!(
            a.url(Op::Chat, "m").unwrap(),
            "https://api.anthropic.com/v1/messages"
        );
        assert!(a.url(Op::Embeddings, "m").is_none());
        let h = a.auth_headers(Some("k"));
        assert_eq!(h[0].1, ANTHROPIC_VERSION);
        assert_eq!(h[1].0, "x-api-key");
        let z = Endpoint::of(&provider(
            AiProviderKind::AzureOpenai,
            Some("https://r.openai.azure.com/"),
        ));
        assert_eq!(
            z.url(Op::Chat, "my dep").unwrap(),
            "https://r.openai.azure.com/openai/deployments/my%20dep/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(z.auth_headers(Some("k"))[0].0, "api-key");
    }
}
