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
    /// Gemini `generateContent` (Gemini API and Vertex AI).
    Gemini,
    /// Bedrock Converse.
    Bedrock,
}

/// How a key is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer KEY`.
    Bearer,
    /// The key in a header of its own (`x-api-key`, `api-key`, `x-goog-api-key`).
    Header(&'static str),
    /// Vertex AI: a service account key file exchanged for a token, or a token.
    Google,
    /// Bedrock: SigV4 with `ACCESS_KEY_ID:SECRET[:TOKEN]`, else a bearer API key.
    Aws,
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
    /// Bedrock's region (what requests are signed for).
    pub region: String,
    /// How keys are presented.
    pub auth: Auth,
}

/// The operation a call performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Chat (Chat Completions or Messages, by wire).
    Chat,
    /// Chat, streamed (a URL of its own for Gemini and Bedrock).
    ChatStream,
    /// Embeddings.
    Embeddings,
}

impl Endpoint {
    /// The endpoint of a provider entity.
    pub fn of(p: &AiProvider) -> Endpoint {
        let region = p.region.clone().unwrap_or_default();
        let derived = match (p.kind, &p.project) {
            (AiProviderKind::VertexGemini, Some(project)) if !region.is_empty() => {
                let host = if region == "global" {
                    "aiplatform.googleapis.com".to_string()
                } else {
                    format!("{region}-aiplatform.googleapis.com")
                };
                Some(format!(
                    "https://{host}/v1/projects/{project}/locations/{region}/publishers/google"
                ))
            }
            (AiProviderKind::Bedrock, _) if !region.is_empty() => {
                Some(format!("https://bedrock-runtime.{region}.amazonaws.com"))
            }
            _ => None,
        };
        let base = p
            .base_url
            .clone()
            .or(derived)
            .or_else(|| p.kind.default_base_url().map(str::to_string))
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        let (wire, auth) = match p.kind {
            AiProviderKind::Anthropic => (Wire::Anthropic, Auth::Header("x-api-key")),
            AiProviderKind::AzureOpenai => (Wire::OpenAi, Auth::Header("api-key")),
            // Google's OpenAI-compatible endpoint, when the URL names it.
            AiProviderKind::Gemini if base.ends_with("/openai") => (Wire::OpenAi, Auth::Bearer),
            AiProviderKind::Gemini => (Wire::Gemini, Auth::Header("x-goog-api-key")),
            AiProviderKind::VertexGemini => (Wire::Gemini, Auth::Google),
            AiProviderKind::Bedrock => (Wire::Bedrock, Auth::Aws),
            _ => (Wire::OpenAi, Auth::Bearer),
        };
        Endpoint {
            kind: p.kind,
            wire,
            base,
            api_version: p
                .api_version
                .clone()
                .unwrap_or_else(|| AZURE_API_VERSION.to_string()),
            region,
            auth,
        }
    }

    /// The URL of `op` for upstream model `model`; `None` when the provider has no such
    /// endpoint.
    pub fn url(&self, op: Op, model: &str) -> Option<String> {
        let m = percent_encode_segment(model);
        match (self.wire, op) {
            (Wire::Anthropic, Op::Chat | Op::ChatStream) => Some(format!("{}/messages", self.base)),
            (Wire::Anthropic | Wire::Bedrock, Op::Embeddings) => None,
            (Wire::Gemini, Op::Chat) => Some(format!("{}/models/{m}:generateContent", self.base)),
            (Wire::Gemini, Op::ChatStream) => Some(format!(
                "{}/models/{m}:streamGenerateContent?alt=sse",
                self.base
            )),
            // Vertex AI embeds through `:predict`, in a format of its own.
            (Wire::Gemini, Op::Embeddings) if self.auth == Auth::Google => None,
            (Wire::Gemini, Op::Embeddings) => {
                Some(format!("{}/models/{m}:batchEmbedContents", self.base))
            }
            (Wire::Bedrock, Op::Chat) => Some(format!("{}/model/{m}/converse", self.base)),
            (Wire::Bedrock, Op::ChatStream) => {
                Some(format!("{}/model/{m}/converse-stream", self.base))
            }
            (Wire::OpenAi, op) if self.kind == AiProviderKind::AzureOpenai => Some(format!(
                "{}/openai/deployments/{m}/{}?api-version={}",
                self.base,
                match op {
                    Op::Chat | Op::ChatStream => "chat/completions",
                    Op::Embeddings => "embeddings",
                },
                self.api_version
            )),
            (Wire::OpenAi, Op::Chat | Op::ChatStream) => {
                Some(format!("{}/chat/completions", self.base))
            }
            (Wire::OpenAi, Op::Embeddings) => Some(format!("{}/embeddings", self.base)),
        }
    }

    /// The headers that present `key` the simple ways (a header or a bearer token); keys
    /// that need signing (`Auth::Aws` with an access key) or an exchange (`Auth::Google`
    /// with a key file) are presented by the caller.
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
        let (name, value) = match self.auth {
            Auth::Header(h) => (HeaderName::from_static(h), key.to_string()),
            Auth::Bearer | Auth::Google | Auth::Aws => {
                (http::header::AUTHORIZATION, format!("Bearer {key}"))
            }
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
        let g = Endpoint::of(&provider(AiProviderKind::Gemini, None));
        assert_eq!(g.wire, Wire::Gemini);
        assert_eq!(
            g.url(Op::ChatStream, "gemini-2.5-flash").unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(g.auth_headers(Some("k"))[0].0, "x-goog-api-key");
        let compat = Endpoint::of(&provider(
            AiProviderKind::Gemini,
            Some("https://generativelanguage.googleapis.com/v1beta/openai/"),
        ));
        assert_eq!(compat.wire, Wire::OpenAi);
        let mut v = provider(AiProviderKind::VertexGemini, None);
        v.project = Some("proj".into());
        v.region = Some("europe-west4".into());
        assert_eq!(
            Endpoint::of(&v).url(Op::Chat, "gemini-2.5-pro").unwrap(),
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/proj/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
        );
        let mut b = provider(AiProviderKind::Bedrock, None);
        b.region = Some("us-west-2".into());
        assert_eq!(
            Endpoint::of(&b).url(Op::ChatStream, "anthropic.claude-3-5-haiku-20241022-v1:0").unwrap(),
            "https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"
        );
    }
}
