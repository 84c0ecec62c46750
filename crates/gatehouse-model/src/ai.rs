//! The AI gateway's entities: LLM providers (where to send, with which keys) and the public
//! models clients ask for (which providers serve them, at what price).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

fn is_nil(id: &Uuid) -> bool {
    id.is_nil()
}
fn one() -> u32 {
    1
}
fn default_connect_timeout() -> u64 {
    10_000
}
fn default_first_token_timeout() -> u64 {
    60_000
}
fn default_total_timeout() -> u64 {
    600_000
}

/// The API family of a provider: decides the wire format, the auth header and the default
/// base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AiProviderKind {
    /// OpenAI.
    Openai,
    /// Azure OpenAI (deployments; `api-key` header; `api_version`).
    AzureOpenai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini API (`generateContent`, `x-goog-api-key`); a `base_url` ending in
    /// `/openai` uses Google's OpenAI-compatible endpoint instead.
    Gemini,
    /// Gemini on Vertex AI (`project` and `region`; keys are service account key files or
    /// access tokens).
    VertexGemini,
    /// AWS Bedrock Converse (`region`; keys are `ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]`,
    /// signed with SigV4, or Bedrock API keys).
    Bedrock,
    /// Mistral.
    Mistral,
    /// Groq.
    Groq,
    /// DeepSeek.
    Deepseek,
    /// xAI.
    Xai,
    /// OpenRouter.
    Openrouter,
    /// Together AI.
    Together,
    /// Fireworks AI.
    Fireworks,
    /// A local Ollama (its OpenAI-compatible API).
    Ollama,
    /// A vLLM server.
    Vllm,
    /// Any other server speaking OpenAI's API (`base_url` required).
    OpenaiCompatible,
}

impl AiProviderKind {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            AiProviderKind::Openai => "openai",
            AiProviderKind::AzureOpenai => "azure-openai",
            AiProviderKind::Anthropic => "anthropic",
            AiProviderKind::Gemini => "gemini",
            AiProviderKind::VertexGemini => "vertex-gemini",
            AiProviderKind::Bedrock => "bedrock",
            AiProviderKind::Mistral => "mistral",
            AiProviderKind::Groq => "groq",
            AiProviderKind::Deepseek => "deepseek",
            AiProviderKind::Xai => "xai",
            AiProviderKind::Openrouter => "openrouter",
            AiProviderKind::Together => "together",
            AiProviderKind::Fireworks => "fireworks",
            AiProviderKind::Ollama => "ollama",
            AiProviderKind::Vllm => "vllm",
            AiProviderKind::OpenaiCompatible => "openai-compatible",
        }
    }

    /// The base URL (up to and including the API version) when the config gives none;
    /// `None` where the user's own resource or server must be named.
    pub fn default_base_url(self) -> Option<&'static str> {
        Some(match self {
            AiProviderKind::Openai => "https://api.openai.com/v1",
            AiProviderKind::Anthropic => "https://api.anthropic.com/v1",
            AiProviderKind::Gemini => "https://generativelanguage.googleapis.com/v1beta",
            AiProviderKind::Mistral => "https://api.mistral.ai/v1",
            AiProviderKind::Groq => "https://api.groq.com/openai/v1",
            AiProviderKind::Deepseek => "https://api.deepseek.com/v1",
            AiProviderKind::Xai => "https://api.x.ai/v1",
            AiProviderKind::Openrouter => "https://openrouter.ai/api/v1",
            AiProviderKind::Together => "https://api.together.xyz/v1",
            AiProviderKind::Fireworks => "https://api.fireworks.ai/inference/v1",
            AiProviderKind::Ollama => "http://127.0.0.1:11434/v1",
            AiProviderKind::Vllm => "http://127.0.0.1:8000/v1",
            AiProviderKind::AzureOpenai
            | AiProviderKind::VertexGemini
            | AiProviderKind::Bedrock
            | AiProviderKind::OpenaiCompatible => return None,
        })
    }

    /// True for servers that commonly run without an API key.
    pub fn keyless(self) -> bool {
        matches!(
            self,
            AiProviderKind::Ollama | AiProviderKind::Vllm | AiProviderKind::OpenaiCompatible
        )
    }
}

/// One API key of a provider's pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiKey {
    /// The key, or a reference resolved on each node: `{env://NAME}`, `{file://path}`.
    /// Write-only: reads show `REDACTED` for a literal key (references are shown).
    pub key: String,
    /// Share of the requests this key gets among the usable keys (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

/// An LLM provider account: its API family, where it is, and a pool of keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiProvider {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// Unique name, used by `ai_models` targets.
    pub name: String,
    /// API family.
    pub kind: AiProviderKind,
    /// API root including its version (`https://api.openai.com/v1`); defaulted per kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// API keys, used by weight; a key answered with 429, 401/403 or 5xx cools down.
    #[serde(default)]
    pub keys: Vec<AiKey>,
    /// Azure OpenAI's `api-version` (default `2024-10-21`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Bedrock's AWS region (`us-east-1`), or Vertex AI's location (`us-central1`,
    /// `global`): the default `base_url` is made from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Vertex AI's Google Cloud project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Milliseconds to connect (TCP and TLS). Default 10,000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Milliseconds from sending the request to the first byte of the answer (the first
    /// token of a stream). Default 60,000.
    #[serde(default = "default_first_token_timeout")]
    pub first_token_timeout: u64,
    /// Milliseconds for the whole answer. Default 600,000.
    #[serde(default = "default_total_timeout")]
    pub timeout: u64,
    /// Extra headers sent with every request to this provider.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// PEM CA bundles trusted for an `https` provider instead of the system roots (a
    /// private server behind an internal CA).
    #[serde(default)]
    pub ca_certificates: Vec<String>,
    /// When it was created (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When it last changed (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Where a public model is served: a provider and the model name it knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiTarget {
    /// Name or id of an `ai_providers` entry.
    pub provider: String,
    /// The model as the provider names it (for Azure: the deployment).
    pub model: String,
    /// Share of the traffic among targets of the same priority (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Fallback order (0-1000): the lowest priority is tried first; higher ones when it
    /// fails (429, 5xx, timeout) before anything reached the client. Default 0.
    #[serde(default)]
    pub priority: u32,
}

/// Prices in US dollars per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiPrice {
    /// Input (prompt) tokens.
    pub input: f64,
    /// Output (completion) tokens, reasoning included.
    pub output: f64,
    /// Input tokens read from the provider's prompt cache (default: `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Input tokens written to the provider's prompt cache (default: `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

/// A model name clients send, and the targets that serve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiModel {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// The public name (`gpt-4o`, `claude-sonnet`, `fast`); unique.
    pub name: String,
    /// Providers serving it, by priority then weight.
    pub targets: Vec<AiTarget>,
    /// Price per million tokens; default: the built-in table for the first target's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<AiPrice>,
    /// When it was created (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When it last changed (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What a key reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// The key itself.
    Literal(&'a str),
    /// `{env://NAME}`.
    Env(&'a str),
    /// `{file://path}`.
    File(&'a str),
}

/// Reads a key's form; `Err` for a reference that is malformed.
pub fn key_source(key: &str) -> Result<KeySource<'_>, String> {
    let Some(inner) = key.strip_prefix('{').and_then(|k| k.strip_suffix('}')) else {
        if key.contains(['{', '}']) {
            return Err("braces only in a reference: `{env://NAME}` or `{file://path}`".into());
        }
        return Ok(KeySource::Literal(key));
    };
    if let Some(name) = inner.strip_prefix("env://") {
        let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        return if ok {
            Ok(KeySource::Env(name))
        } else {
            Err("`{env://NAME}` needs a variable name of letters, digits and `_`".into())
        };
    }
    if let Some(path) = inner.strip_prefix("file://") {
        return if path.starts_with('/') && !path.contains('}') {
            Ok(KeySource::File(path))
        } else {
            Err("`{file://path}` needs an absolute path".into())
        };
    }
    Err("a key in braces must be `{env://NAME}` or `{file://path}`".into())
}

/// True for a key written out (a secret reads hide), false for a reference.
pub fn is_literal_key(key: &str) -> bool {
    matches!(key_source(key), Ok(KeySource::Literal(_)))
}

/// Problems with the AI entities, as `(entity label, entity path, field, message)`;
/// rewrites each target's provider reference to the provider's id.
pub(crate) fn check(
    providers: &[AiProvider],
    models: &mut [AiModel],
    path_of: &dyn Fn(Uuid) -> String,
) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    let mut by_ref: std::collections::HashMap<String, Uuid> = std::collections::HashMap::new();
    for p in providers {
        let base = path_of(p.id);
        let ent = format!("ai_provider '{}'", p.name);
        let mut err = |field: &str, msg: String| {
            out.push((ent.clone(), base.clone(), field.to_string(), msg));
        };
        if !crate::validate::valid_name(&p.name) {
            err("name", "must be 1-128 letters, digits or `._~-`".into());
        }
        if by_ref.insert(p.name.clone(), p.id).is_some() {
            err(
                "name",
                format!(
                    "name `{}` {} another ai_provider",
                    p.name,
                    crate::validate::ALREADY_USED
                ),
            );
        }
        by_ref.insert(p.id.to_string(), p.id);
        for (field, v) in [("region", &p.region), ("project", &p.project)] {
            if let Some(v) = v {
                let ok = !v.is_empty()
                    && v.len() <= 63
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !ok {
                    err(field, "must be 1-63 letters, digits or `-`".into());
                }
            }
        }
        if p.kind == AiProviderKind::Bedrock && p.region.is_none() {
            err(
                "region",
                "is required for kind `bedrock`: requests are signed for one AWS region".into(),
            );
        }
        let vertex_derived =
            p.kind == AiProviderKind::VertexGemini && p.region.is_some() && p.project.is_some();
        match &p.base_url {
            Some(u) => {
                if let Err(e) = check_base_url(u) {
                    err("base_url", e);
                }
            }
            None if p.kind == AiProviderKind::VertexGemini && !vertex_derived => {
                err(
                    "base_url",
                    "kind `vertex-gemini` needs `project` and `region` (or a `base_url` ending in `/publishers/google`)".into(),
                );
            }
            None if p.kind.default_base_url().is_none()
                && !vertex_derived
                && p.kind != AiProviderKind::Bedrock =>
            {
                err(
                    "base_url",
                    format!("kind `{}` has no default: give its URL", p.kind.as_str()),
                );
            }
            None => {}
        }
        if p.keys.is_empty() && !p.kind.keyless() {
            err(
                "keys",
                format!("kind `{}` needs at least one key", p.kind.as_str()),
            );
        }
        for (j, k) in p.keys.iter().enumerate() {
            if k.key.is_empty() || k.key.len() > 4096 || k.key.chars().any(char::is_control) {
                err(
                    &format!("keys[{j}].key"),
                    "must be 1-4096 characters, no control characters".into(),
                );
            } else if k.key == crate::secret::REDACTED {
                err(
                    &format!("keys[{j}].key"),
                    "is `REDACTED` (what reads show) and no stored key is at this position: give the key".into(),
                );
            } else if let Err(e) = key_source(&k.key) {
                err(&format!("keys[{j}].key"), e);
            }
            if k.weight == 0 || k.weight > 1000 {
                err(&format!("keys[{j}].weight"), "must be 1-1000".into());
            }
        }
        for (field, v) in [
            ("connect_timeout", p.connect_timeout),
            ("first_token_timeout", p.first_token_timeout),
            ("timeout", p.timeout),
        ] {
            if v == 0 || v > crate::validate::MAX_TIMEOUT_MS {
                err(
                    field,
                    format!("must be 1-{} milliseconds", crate::validate::MAX_TIMEOUT_MS),
                );
            }
        }
        for (j, pem) in p.ca_certificates.iter().enumerate() {
            if let Err(e) = crate::tls::check_ca_bundle(pem) {
                err(&format!("ca_certificates[{j}]"), e);
            }
        }
        for (name, value) in &p.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                err(
                    &format!("headers.{name}"),
                    "is not a valid header name".into(),
                );
            } else if http::HeaderValue::from_str(value).is_err() {
                err(
                    &format!("headers.{name}"),
                    "is not a valid header value".into(),
                );
            }
        }
    }
    let mut names = std::collections::HashSet::new();
    for m in models.iter_mut() {
        let base = path_of(m.id);
        let ent = format!("ai_model '{}'", m.name);
        let mut err = |field: &str, msg: String| {
            out.push((ent.clone(), base.clone(), field.to_string(), msg));
        };
        if m.name.is_empty() || m.name.len() > 256 || m.name.chars().any(char::is_control) {
            err(
                "name",
                "must be 1-256 characters, no control characters".into(),
            );
        }
        if !names.insert(m.name.clone()) {
            err(
                "name",
                format!(
                    "name `{}` {} another ai_model",
                    m.name,
                    crate::validate::ALREADY_USED
                ),
            );
        }
        if m.targets.is_empty() {
            err("targets", "needs at least one target".into());
        }
        for (j, t) in m.targets.iter_mut().enumerate() {
            match by_ref.get(&t.provider) {
                Some(id) => t.provider = id.to_string(),
                None => err(
                    &format!("targets[{j}].provider"),
                    format!("no ai_provider `{}`", t.provider),
                ),
            }
            if t.model.is_empty() || t.model.len() > 256 || t.model.chars().any(char::is_control) {
                err(
                    &format!("targets[{j}].model"),
                    "must be 1-256 characters, no control characters".into(),
                );
            }
            if t.weight == 0 || t.weight > 1000 {
                err(&format!("targets[{j}].weight"), "must be 1-1000".into());
            }
            if t.priority > 1000 {
                err(&format!("targets[{j}].priority"), "must be 0-1000".into());
            }
        }
        if let Some(p) = &m.price {
            for (field, v) in [
                ("input", Some(p.input)),
                ("output", Some(p.output)),
                ("cached_input", p.cached_input),
                ("cache_write", p.cache_write),
            ] {
                if v.is_some_and(|v| !(0.0..=1_000_000.0).contains(&v)) {
                    err(
                        &format!("price.{field}"),
                        "must be 0-1000000 (dollars per million tokens)".into(),
                    );
                }
            }
        }
    }
    out
}

/// A base URL: `http(s)://host[:port][/path]`, no query or fragment.
pub fn check_base_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or("must start with `http://` or `https://`")?;
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not hold a query, fragment or spaces".into());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    crate::validate::parse_host_port(authority, 443).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references() {
        assert_eq!(key_source("sk-1"), Ok(KeySource::Literal("sk-1")));
        assert_eq!(
            key_source("{env://OPENAI_KEY}"),
            Ok(KeySource::Env("OPENAI_KEY"))
        );
        assert_eq!(key_source("{file:///run/k}"), Ok(KeySource::File("/run/k")));
        assert!(key_source("{env://A-B}").is_err());
        assert!(key_source("{file://rel}").is_err());
        assert!(key_source("{vault://x}").is_err());
    }

    #[test]
    fn base_urls() {
        assert!(check_base_url("https://api.openai.com/v1").is_ok());
        assert!(check_base_url("http://127.0.0.1:8000/v1").is_ok());
        assert!(check_base_url("ftp://x").is_err());
        assert!(check_base_url("https://x/v1?a=b").is_err());
        assert!(check_base_url("https:///v1").is_err());
    }
}
