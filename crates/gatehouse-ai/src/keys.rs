//! A provider's pool of API keys: picked by weight among those not cooling down. A key the
//! provider rate-limited (429) rests for that model (rate limits are per key and model); a
//! key it refused (401/403) rests for every model. One exhausted or revoked key then does
//! not fail every request. Server errors bench no key: they move the call to the next target.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gatehouse_model::ai::{key_source, KeySource};
use rand::Rng;

/// How long a key rests when the provider gives no `Retry-After`.
pub const COOLDOWN_RATE_LIMITED_MS: u64 = 10_000;
/// A key the provider says is invalid or not allowed rests this long.
pub const COOLDOWN_REFUSED_MS: u64 = 60_000;
/// Longest rest a `Retry-After` can impose.
pub const MAX_COOLDOWN_MS: u64 = 600_000;

/// One usable key.
pub struct Key {
    /// The secret (resolved from a reference); never logged.
    pub secret: Arc<str>,
    /// Position in the provider's `keys` (what logs and metrics name).
    pub index: usize,
    weight: u32,
    until_ms: AtomicU64,
    /// Rests for one model: (model, until).
    by_model: std::sync::Mutex<Vec<(Arc<str>, u64)>>,
}

impl Key {
    fn rests_until(&self, model: &str) -> u64 {
        let whole = self.until_ms.load(Ordering::Relaxed);
        let m = self
            .by_model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(n, _)| &**n == model)
            .map_or(0, |(_, u)| *u);
        whole.max(m)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("index", &self.index).finish()
    }
}

/// A provider's keys.
#[derive(Debug, Default)]
pub struct KeyPool {
    keys: Vec<Key>,
}

/// Why a key could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `{env://NAME}` names an unset variable.
    #[error("keys[{0}]: environment variable `{1}` is not set")]
    Env(usize, String),
    /// `{file://path}` could not be read.
    #[error("keys[{0}]: cannot read `{1}`: {2}")]
    File(usize, String, String),
    /// Malformed reference.
    #[error("keys[{0}]: {1}")]
    Bad(usize, String),
}

impl KeyPool {
    /// Resolves the provider's keys; those that cannot be resolved are returned as errors
    /// beside the pool of the others.
    pub fn resolve(keys: &[gatehouse_model::AiKey]) -> (KeyPool, Vec<KeyError>) {
        let mut pool = KeyPool::default();
        let mut errors = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let secret = match key_source(&k.key) {
                Ok(KeySource::Literal(s)) => s.to_string(),
                Ok(KeySource::Env(name)) => match std::env::var(name) {
                    Ok(v) if !v.is_empty() => v,
                    _ => {
                        errors.push(KeyError::Env(i, name.to_string()));
                        continue;
                    }
                },
                Ok(KeySource::File(path)) => match std::fs::read_to_string(path) {
                    Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
                    Ok(_) => {
                        errors.push(KeyError::File(i, path.into(), "empty".into()));
                        continue;
                    }
                    Err(e) => {
                        errors.push(KeyError::File(i, path.into(), e.to_string()));
                        continue;
                    }
                },
                Err(e) => {
                    errors.push(KeyError::Bad(i, e));
                    continue;
                }
            };
            pool.keys.push(Key {
                secret: secret.into(),
                index: i,
                weight: k.weight.max(1),
                until_ms: AtomicU64::new(0),
                by_model: std::sync::Mutex::default(),
            });
        }
        (pool, errors)
    }

    /// True when the provider has no key (a keyless local server).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A key not resting for `model`, by weight; `Err(ms)` when all rest: the time until
    /// the first is usable again.
    pub fn pick(&self, now_ms: u64, skip: &[usize], model: &str) -> Result<&Key, u64> {
        let usable = |k: &&Key| k.rests_until(model) <= now_ms && !skip.contains(&k.index);
        let total: u64 = self
            .keys
            .iter()
            .filter(usable)
            .map(|k| u64::from(k.weight))
            .sum();
        if total == 0 {
            let wait = self
                .keys
                .iter()
                .map(|k| k.rests_until(model).saturating_sub(now_ms))
                .min()
                .unwrap_or(0);
            return Err(wait.max(1));
        }
        let mut r = rand::thread_rng().gen_range(0..total);
        for k in self.keys.iter().filter(usable) {
            let w = u64::from(k.weight);
            if r < w {
                return Ok(k);
            }
            r -= w;
        }
        Err(1)
    }

    /// Rests key `index` for `ms`: for `model` only, or (`None`) for every model.
    pub fn cool_down(&self, index: usize, model: Option<&str>, now_ms: u64, ms: u64) {
        let Some(k) = self.keys.iter().find(|k| k.index == index) else {
            return;
        };
        let until = now_ms + ms.min(MAX_COOLDOWN_MS);
        match model {
            None => {
                k.until_ms.fetch_max(until, Ordering::Relaxed);
            }
            Some(m) => {
                let mut list = k
                    .by_model
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                list.retain(|(_, u)| *u > now_ms);
                match list.iter_mut().find(|(n, _)| &**n == m) {
                    Some((_, u)) => *u = (*u).max(until),
                    None => list.push((m.into(), until)),
                }
            }
        }
    }
}

/// What an error answer means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key is rate limited for this model: rest it that long, try another key.
    RateLimited(u64),
    /// The key is refused (invalid, not allowed): rest it for every model, try another.
    KeyRefused(u64),
    /// The provider failed (5xx, 408): try the next target.
    ProviderFailed,
    /// The request itself is wrong (other 4xx): every key and target would say the same.
    ClientError,
}

/// What an answer with `status` (and the provider's `Retry-After` in milliseconds, when
/// it sent one) means.
pub fn verdict(status: u16, retry_after_ms: Option<u64>) -> Verdict {
    match status {
        429 => Verdict::RateLimited(retry_after_ms.unwrap_or(COOLDOWN_RATE_LIMITED_MS)),
        401 | 403 => Verdict::KeyRefused(COOLDOWN_REFUSED_MS),
        408 | 500..=599 => Verdict::ProviderFailed,
        _ => Verdict::ClientError,
    }
}

/// `Retry-After` in milliseconds: seconds (possibly fractional) or an HTTP date; also
/// OpenAI's `retry-after-ms`.
pub fn retry_after_ms(headers: &http::HeaderMap, now: std::time::SystemTime) -> Option<u64> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(ms as u64);
    }
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).map_or(0, |d| d.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::AiKey;

    fn pool(n: usize) -> KeyPool {
        let keys: Vec<AiKey> = (0..n)
            .map(|i| AiKey {
                key: format!("k{i}"),
                weight: 1,
            })
            .collect();
        KeyPool::resolve(&keys).0
    }

    #[test]
    fn cooled_keys_are_skipped_until_they_rest() {
        let p = pool(2);
        p.cool_down(0, None, 1_000, 5_000);
        for _ in 0..50 {
            assert_eq!(p.pick(2_000, &[], "m").unwrap().index, 1);
        }
        p.cool_down(1, Some("m"), 1_000, 3_000);
        assert_eq!(p.pick(2_000, &[], "m").unwrap_err(), 2_000);
        assert_eq!(
            p.pick(2_000, &[], "other").unwrap().index,
            1,
            "rests for m only"
        );
        assert!(p.pick(6_000, &[], "m").is_ok());
        assert_eq!(p.pick(6_000, &[0, 1], "m").unwrap_err(), 1);
    }

    #[test]
    fn weights_share_the_traffic() {
        let keys = vec![
            AiKey {
                key: "a".into(),
                weight: 3,
            },
            AiKey {
                key: "b".into(),
                weight: 1,
            },
        ];
        let p = KeyPool::resolve(&keys).0;
        let a = (0..4000)
            .filter(|_| p.pick(0, &[], "m").unwrap().index == 0)
            .count();
        assert!((2700..3300).contains(&a), "{a}");
    }

    #[test]
    fn references_resolve_or_say_why() {
        let keys = vec![
            AiKey {
                key: "{env://GATEHOUSE_SURELY_UNSET_VAR}".into(),
                weight: 1,
            },
            AiKey {
                key: "{file:///nonexistent/key}".into(),
                weight: 1,
            },
            AiKey {
                key: "plain".into(),
                weight: 1,
            },
        ];
        let (p, errors) = KeyPool::resolve(&keys);
        assert_eq!(errors.len(), 2);
        assert!(errors[0].to_string().contains("GATEHOUSE_SURELY_UNSET_VAR"));
        assert_eq!(&*p.pick(0, &[], "m").unwrap().secret, "plain");
    }

    #[test]
    fn retry_after_forms() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after_ms(&h, now), Some(7_000));
        h.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:40 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after_ms(&h, now), Some(3_000));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after_ms(&h, now), Some(250));
        assert_eq!(verdict(400, None), Verdict::ClientError);
        assert_eq!(verdict(429, Some(250)), Verdict::RateLimited(250));
        assert_eq!(verdict(503, None), Verdict::ProviderFailed);
    }
}
