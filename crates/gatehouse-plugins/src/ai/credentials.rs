//! How a key reaches a provider: a header or a bearer token for most; for Bedrock an
//! access key signs each request (SigV4, over the exact host, path and body sent); for
//! Vertex AI a service account key file is exchanged for an access token, kept per key
//! until a minute before it expires.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_ai::aws;
use gatehouse_ai::google::{ServiceAccount, Token};
use gatehouse_ai::keys::Key;
use gatehouse_ai::provider::Auth;
use gatehouse_proxy::outcall::{Destination, Outcall};
use http::{HeaderName, HeaderValue};
use http_body_util::BodyExt;

use super::catalog::ProviderRt;

/// How long the token exchange may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A token is renewed this long before it expires.
const TOKEN_MARGIN_MS: u64 = 60_000;

type Headers = Vec<(HeaderName, HeaderValue)>;

/// The headers that present `key` for a call of `url` with `body`.
pub(super) async fn present(
    p: &ProviderRt,
    key: &Key,
    url: &str,
    body: &Bytes,
    outcall: Option<&Outcall>,
) -> Result<Headers, String> {
    match p.endpoint.auth {
        Auth::Aws => match aws::Credentials::parse(&key.secret) {
            Some(creds) => Ok(sign_aws(p, &creds, url, body)),
            None => Ok(p.endpoint.auth_headers(Some(&key.secret))),
        },
        Auth::Google => {
            let token = google_token(p, key, outcall).await?;
            Ok(p.endpoint.auth_headers(Some(&token)))
        }
        Auth::Bearer | Auth::Header(_) => Ok(p.endpoint.auth_headers(Some(&key.secret))),
    }
}

fn sign_aws(p: &ProviderRt, creds: &aws::Credentials, url: &str, body: &Bytes) -> Headers {
    let host = p.dest.host_header().to_str().unwrap_or_default();
    let rest = url.strip_prefix(p.dest.origin()).unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let date = aws::amz_date(unix_ms() / 1_000);
    aws::sign(
        creds,
        &aws::Scope {
            region: &p.endpoint.region,
            service: "bedrock",
            amz_date: &date,
        },
        &aws::Request {
            method: "POST",
            host,
            path,
            query,
            headers: &[("content-type", "application/json")],
            body,
        },
    )
}

/// A Vertex AI access token for `key`: the key itself, or one exchanged for its key file.
async fn google_token(
    p: &ProviderRt,
    key: &Key,
    outcall: Option<&Outcall>,
) -> Result<Arc<str>, String> {
    let now = unix_ms();
    if let Some((t, until)) = lock(&p.google_tokens).get(&key.index) {
        if *until > now + TOKEN_MARGIN_MS {
            return Ok(t.clone());
        }
    }
    let sa = match ServiceAccount::parse(&key.secret) {
        Ok(None) => return Ok(key.secret.clone()),
        Ok(Some(sa)) => sa,
        Err(e) => return Err(format!("key {}: {e}", key.index)),
    };
    let outcall = outcall.ok_or("no worker client to call with")?;
    let form = sa
        .token_request(now / 1_000)
        .map_err(|e| format!("key {}: {e}", key.index))?;
    let dest = token_destination(p, sa.token_uri())?;
    let path = sa
        .token_uri()
        .strip_prefix(dest.origin())
        .filter(|r| !r.is_empty())
        .unwrap_or("/");
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let exchange = async {
        let resp = outcall
            .post(&dest, path, &headers, Bytes::from(form), TOKEN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!(
                "answered {}: {}",
                status.as_u16(),
                text.chars().take(300).collect::<String>()
            ));
        }
        serde_json::from_slice::<Token>(&body).map_err(|e| format!("answered no token: {e}"))
    };
    let token = tokio::time::timeout(TOKEN_TIMEOUT, exchange)
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r)
        .map_err(|e| {
            format!(
                "token exchange for key {} at {}: {e}",
                key.index,
                sa.token_uri()
            )
        })?;
    let t: Arc<str> = token.access_token.into();
    lock(&p.google_tokens).insert(key.index, (t.clone(), now + token.expires_in * 1_000));
    tracing::debug!(provider = %p.name, key = key.index, account = %sa.client_email, "vertex ai access token obtained");
    Ok(t)
}

/// The token endpoint's destination, made once per provider (and URI).
fn token_destination(p: &ProviderRt, uri: &str) -> Result<Arc<Destination>, String> {
    let mut slot = lock(&p.token_dest);
    if let Some((u, d)) = slot.as_ref() {
        if u == uri {
            return Ok(d.clone());
        }
    }
    // A token endpoint on the provider's own origin (a private deployment) is trusted
    // like the provider; Google's is checked against the system roots.
    let same_origin = uri.starts_with(p.dest.origin());
    let cas: &[String] = if same_origin { &p.ca_certificates } else { &[] };
    let dest = Arc::new(Destination::of_url(
        uri,
        cas,
        p.connect_timeout,
        TOKEN_TIMEOUT,
    )?);
    *slot = Some((uri.to_string(), dest.clone()));
    Ok(dest)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
