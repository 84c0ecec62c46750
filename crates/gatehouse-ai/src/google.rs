//! Vertex AI credentials: a service account key (the JSON file Google hands out) is
//! exchanged for an OAuth2 access token with a signed JWT assertion (RFC 7523), as Google's
//! own client libraries do; a key that is not such a file is taken as an access token.

use serde::Deserialize;

/// The scope Vertex AI needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, when the key file names none.
pub const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Lifetime asked for an access token (Google's maximum).
pub const TOKEN_LIFETIME_S: u64 = 3_600;

/// What a service account key file holds that the exchange needs.
#[derive(Deserialize)]
pub struct ServiceAccount {
    /// `service_account`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The account (the assertion's issuer).
    pub client_email: String,
    /// PEM (PKCS#8) RSA private key.
    private_key: String,
    /// The key's id (the assertion's `kid`).
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// Where to exchange the assertion.
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

/// A key that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a service account key file.
    #[error("not a service account key: {0}")]
    Parse(String),
    /// The private key could not sign.
    #[error("service account private key: {0}")]
    Sign(String),
}

impl ServiceAccount {
    /// The key file, when `key` is one (it starts with `{`); `Ok(None)` for an access token.
    pub fn parse(key: &str) -> Result<Option<ServiceAccount>, KeyError> {
        if !key.trim_start().starts_with('{') {
            return Ok(None);
        }
        let sa: ServiceAccount =
            serde_json::from_str(key).map_err(|e| KeyError::Parse(e.to_string()))?;
        if sa.kind != "service_account" {
            return Err(KeyError::Parse(format!(
                "`type` is `{}`, not `service_account`",
                sa.kind
            )));
        }
        Ok(Some(sa))
    }

    /// Where the assertion is exchanged.
    pub fn token_uri(&self) -> &str {
        self.token_uri.as_deref().unwrap_or(TOKEN_URI)
    }

    /// The signed assertion for a token valid from `now` (Unix seconds).
    pub fn assertion(&self, now: u64) -> Result<String, KeyError> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.private_key_id.clone();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.private_key.as_bytes())
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: self.token_uri(),
            iat: now,
            exp: now + TOKEN_LIFETIME_S,
        };
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// The form body of the exchange.
    pub fn token_request(&self, now: u64) -> Result<String, KeyError> {
        Ok(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            self.assertion(now)?
        ))
    }
}

/// Google's answer to the exchange.
#[derive(Deserialize)]
pub struct Token {
    /// The bearer token.
    pub access_token: String,
    /// Seconds it stays valid.
    #[serde(default = "default_expiry")]
    pub expires_in: u64,
}

fn default_expiry() -> u64 {
    TOKEN_LIFETIME_S
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_pass_and_broken_files_are_named() {
        assert!(ServiceAccount::parse("ya29.token").unwrap().is_none());
        let e = ServiceAccount::parse(
            r#"{"type": "authorized_user", "client_email": "a", "private_key": "x"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("authorized_user"), "{e}");
        assert!(ServiceAccount::parse("{not json").is_err());
    }
}
