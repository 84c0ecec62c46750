//! `gatehouse config dump|diff|sync`: decK's everyday commands against a running node's
//! admin API — see what a file would change, then apply it.
//!
//! Entities are matched by what a person names them (service, route and upstream names,
//! consumer usernames, a plugin's name and scope, a certificate's first SNI), not by id: ids
//! of entities made through the admin API are random, those of a file derived from names.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

/// Where the admin API is and how to authenticate to it.
pub struct Remote {
    authority: String,
    token: String,
}

impl Remote {
    /// `url` is `http://host:port` (the admin listener); the token comes from the flag, the
    /// file, or `GATEHOUSE_ADMIN_TOKEN`.
    pub fn new(url: &str, token: Option<String>) -> Result<Remote> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--admin-url must be http://host:port (the admin listener), got `{url}`");
        };
        let authority = rest.trim_end_matches('/').to_string();
        anyhow::ensure!(
            !authority.is_empty() && !authority.contains('/'),
            "--admin-url must be http://host:port, got `{url}`"
        );
        let token = token
            .or_else(|| std::env::var("GATEHOUSE_ADMIN_TOKEN").ok())
            .context("an admin token is needed: --admin-token, --admin-token-file or GATEHOUSE_ADMIN_TOKEN")?;
        Ok(Remote { authority, token })
    }

    /// One request; the answer's status and body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, Bytes)> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connecting to the admin API at {}", self.authority))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .context("talking HTTP to the admin API")?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("authorization", format!("Bearer {}", self.token));
        let bytes = match body {
            Some((ct, b)) => {
                req = req.header("content-type", ct);
                Bytes::from(b)
            }
            None => Bytes::new(),
        };
        let resp = send
            .send_request(req.body(Full::new(bytes))?)
            .await
            .context("admin API request")?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Bytes> {
        let (status, body) = self.call(method, path, body).await?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status}\n{}", explain(&body));
        }
        Ok(body)
    }
}

/// An admin API error body, as lines a person reads.
fn explain(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::from_utf8_lossy(body).into_owned();
    };
    let mut out = v["error"]["message"].as_str().unwrap_or("").to_string();
    for d in v["error"]["details"].as_array().into_iter().flatten() {
        let at = match (d["line"].as_u64(), d["column"].as_u64()) {
            (Some(l), Some(c)) => format!("{l}:{c}: "),
            _ => String::new(),
        };
        out.push_str(&format!(
            "\n  {at}{}: {}: {}",
            d["entity"].as_str().unwrap_or(""),
            d["path"].as_str().unwrap_or(""),
            d["message"].as_str().unwrap_or("")
        ));
    }
    out
}

/// `config dump`: the running config as a declarative document.
pub async fn dump(remote: &Remote, json: bool) -> Result<String> {
    let format = if json { "json" } else { "yaml" };
    let body = remote
        .ok("GET", &format!("/config?format={format}"), None)
        .await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One difference between the running config and a file.
#[derive(Debug, PartialEq)]
pub enum Change {
    /// In the file only.
    Create(String),
    /// Running only.
    Delete(String),
    /// In both, with these fields changed: (field, running, file).
    Update(String, Vec<(String, Value, Value)>),
}

/// `config diff`: what applying `file_text` would change on the node.
pub async fn diff(remote: &Remote, file_text: &str) -> Result<Vec<Change>> {
    let registry = gatehouse_plugins::registry();
    let wanted = gatehouse_model::parse_document(file_text, &registry)
        .map_err(|e| anyhow::anyhow!("the file is not valid:\n{}", lines(&e.errors)))?;
    // The dump is flat, validated by the node and has redacted private keys: it is read as
    // it is, not validated again.
    let running_json: Value = serde_json::from_str(&dump(remote, true).await?)
        .context("the node's config dump is not JSON")?;
    let mut errors = Vec::new();
    let running = gatehouse_model::from_value(&running_json, &mut errors);
    if !errors.is_empty() {
        bail!("the running config does not read back:\n{}", lines(&errors));
    }
    Ok(compare(&running, &wanted))
}

fn lines(errors: &[gatehouse_model::FieldError]) -> String {
    errors
        .iter()
        .map(|e| {
            let at = e.line.map(|l| format!("{l}: ")).unwrap_or_default();
            format!("  {at}{}: {}: {}", e.entity, e.path, e.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fields that differ between two nodes without anyone changing them.
const IGNORED: &[&str] = &["id", "created_at", "updated_at"];

/// Compares two flat configs entity by entity, by name.
pub fn compare(running: &gatehouse_model::Config, wanted: &gatehouse_model::Config) -> Vec<Change> {
    let a = keyed(running);
    let b = keyed(wanted);
    let mut out = Vec::new();
    for (k, v) in &b {
        match a.get(k) {
            None => out.push(Change::Create(k.clone())),
            Some(old) => {
                let fields = field_changes(old, v);
                if !fields.is_empty() {
                    out.push(Change::Update(k.clone(), fields));
                }
            }
        }
    }
    for k in a.keys() {
        if !b.contains_key(k) {
            out.push(Change::Delete(k.clone()));
        }
    }
    out
}

fn field_changes(old: &Value, new: &Value) -> Vec<(String, Value, Value)> {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !IGNORED.contains(&k.as_str()))
        .filter_map(|k| {
            let (x, y) = (
                o.get(k).cloned().unwrap_or(Value::Null),
                n.get(k).cloned().unwrap_or(Value::Null),
            );
            (comparable(&x) != comparable(&y)).then(|| (k.clone(), x, y))
        })
        .collect()
}

/// A field as compared: ids inside nested credentials dropped, and stored hashes of
/// passwords (salted, so never equal twice) left out — a credential is compared by the
/// fields next to them. Private keys are redacted on both sides by `to_document`.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Array(items) = &mut v {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            item.remove("id");
            item.remove("password_hash");
            item.remove("password");
        }
    }
    v
}

/// Every entity as `kind name` → its document form (references by name).
fn keyed(cfg: &gatehouse_model::Config) -> BTreeMap<String, Value> {
    let doc = gatehouse_model::to_document(cfg);
    let v = serde_json::to_value(&doc).unwrap_or(Value::Null);
    let mut out = BTreeMap::new();
    let text = |x: &Value, k: &str| x.get(k).and_then(Value::as_str).map(str::to_string);
    for (list, kind) in [
        ("services", "service"),
        ("routes", "route"),
        ("upstreams", "upstream"),
        ("consumers", "consumer"),
        ("plugins", "plugin"),
        ("certificates", "certificate"),
    ] {
        for e in v.get(list).and_then(Value::as_array).into_iter().flatten() {
            let mut e = e.clone();
            // Nested lists are compared where they are flattened to.
            if let Some(o) = e.as_object_mut() {
                if kind == "service" {
                    o.remove("routes");
                    o.remove("plugins");
                }
                if kind == "consumer" || kind == "route" {
                    o.remove("plugins");
                }
            }
            let name = match kind {
                "consumer" => text(&e, "username").or_else(|| text(&e, "custom_id")),
                "plugin" => {
                    let mut scope = Vec::new();
                    for s in ["service", "route", "consumer"] {
                        if let Some(x) = text(&e, s) {
                            scope.push(format!("{s} {x}"));
                        }
                    }
                    let scope = if scope.is_empty() {
                        "global".to_string()
                    } else {
                        scope.join(", ")
                    };
                    Some(format!(
                        "{} ({scope})",
                        text(&e, "name").unwrap_or_default()
                    ))
                }
                "certificate" => e
                    .get("snis")
                    .and_then(|s| s.get(0))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => text(&e, "name"),
            }
            .or_else(|| text(&e, "id"))
            .unwrap_or_default();
            out.insert(format!("{kind} {name}"), e);
        }
    }
    out
}

/// Prints changes as decK does; returns how many there were.
pub fn print(changes: &[Change], out: &mut impl Write) -> std::io::Result<usize> {
    let (mut c, mut u, mut d) = (0, 0, 0);
    for ch in changes {
        match ch {
            Change::Create(k) => {
                c += 1;
                writeln!(out, "creating {k}")?;
            }
            Change::Delete(k) => {
                d += 1;
                writeln!(out, "deleting {k}")?;
            }
            Change::Update(k, fields) => {
                u += 1;
                writeln!(out, "updating {k}")?;
                for (f, old, new) in fields {
                    writeln!(out, "  {f}: {old} -> {new}")?;
                }
            }
        }
    }
    writeln!(out, "Summary: {c} to create, {u} to update, {d} to delete")?;
    Ok(changes.len())
}

/// `config sync`: applies the file as the node's whole config (after showing the diff).
pub async fn sync(remote: &Remote, file_text: &str, out: &mut impl Write) -> Result<()> {
    let changes = diff(remote, file_text).await?;
    print(&changes, out)?;
    if changes.is_empty() {
        writeln!(out, "nothing to do")?;
        return Ok(());
    }
    let body = remote
        .ok(
            "POST",
            "/config",
            Some(("application/yaml", file_text.as_bytes().to_vec())),
        )
        .await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    writeln!(out, "applied: config version {}", v["version"])?;
    Ok(())
}
