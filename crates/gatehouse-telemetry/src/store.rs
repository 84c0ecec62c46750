//! The call store: raw calls and rollups in a SQLite file of their own (`<data dir>/calls.db`,
//! WAL), apart from the config database so config writes never wait behind log writes.
//!
//! Raw calls are read newest first through `(ts, rowid)`; every filter the search offers
//! has an index that starts with it and ends with `ts`, so a page is an index range scan
//! that stops after `size` rows however many calls are stored. Charts read rollups only.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;
use uuid::Uuid;

use crate::call::{AiPart, Call};
use crate::query::{
    Bucket, Cursor, Filter, Page, Retention, SeriesQuery, Top, TopBy, TopQuery, Usage,
};
use crate::rollup::{Agg, Key, Resolution};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error.
    #[error("call store: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored sketch could not be read.
    #[error("call store: unreadable rollup sketch: {0}")]
    Sketch(String),
}

type Result<T> = std::result::Result<T, StoreError>;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS calls (
        ts INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        trace_id TEXT,
        route_id BLOB, route TEXT,
        service_id BLOB, service TEXT,
        consumer_id BLOB, consumer TEXT,
        client_ip TEXT NOT NULL,
        method TEXT NOT NULL,
        host TEXT,
        path TEXT NOT NULL,
        status INTEGER NOT NULL,
        total_us INTEGER NOT NULL,
        upstream_us INTEGER,
        bytes_in INTEGER,
        bytes_out INTEGER NOT NULL,
        upstream TEXT,
        retries INTEGER NOT NULL,
        error TEXT,
        complete INTEGER NOT NULL,
        ai TEXT)",
    "CREATE INDEX IF NOT EXISTS calls_ts ON calls (ts)",
    "CREATE INDEX IF NOT EXISTS calls_service_ts ON calls (service_id, ts)",
    "CREATE INDEX IF NOT EXISTS calls_route_ts ON calls (route_id, ts)",
    "CREATE INDEX IF NOT EXISTS calls_consumer_ts ON calls (consumer_id, ts)",
    "CREATE INDEX IF NOT EXISTS calls_status_ts ON calls (status, ts)",
    "CREATE INDEX IF NOT EXISTS calls_request_id ON calls (request_id)",
    "CREATE TABLE IF NOT EXISTS rollups (
        res TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        writer TEXT NOT NULL,
        service_id BLOB NOT NULL, route_id BLOB NOT NULL, consumer_id BLOB NOT NULL,
        service TEXT, route TEXT, consumer TEXT,
        requests INTEGER NOT NULL, s4xx INTEGER NOT NULL, s5xx INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL,
        tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
        latency TEXT NOT NULL,
        PRIMARY KEY (res, bucket, writer, service_id, route_id, consumer_id))",
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
];

/// Columns of `calls`, in insert order.
const CALL_COLUMNS: &str = "ts, request_id, trace_id, route_id, route, service_id, service, consumer_id, consumer, client_ip, method, host, path, status, total_us, upstream_us, bytes_in, bytes_out, upstream, retries, error, complete, ai";

/// Rows per INSERT statement (23 values each; SQLite takes 32,766 per statement).
const ROWS_PER_INSERT: usize = 100;

/// `INSERT INTO calls (…) VALUES (?,…),(?,…)…` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; 23].join(","));
    format!(
        "INSERT INTO calls ({CALL_COLUMNS}) VALUES {}",
        vec![one; rows].join(",")
    )
}

/// Rows deleted per statement when pruning (keeps each delete short).
pub const PRUNE_BATCH: i64 = 5_000;

/// The call store.
#[derive(Clone)]
pub struct CallStore {
    pool: SqlitePool,
    /// This process's rollup rows are keyed by it.
    writer: String,
}

fn blob(id: Option<Uuid>) -> Option<Vec<u8>> {
    id.map(|u| u.as_bytes().to_vec())
}

fn id_of(p: &Option<(Uuid, Option<std::sync::Arc<str>>)>) -> Option<Uuid> {
    p.as_ref().map(|(i, _)| *i)
}

fn name_of(p: &Option<(Uuid, Option<std::sync::Arc<str>>)>) -> Option<&str> {
    p.as_ref().and_then(|(_, n)| n.as_deref())
}

impl CallStore {
    /// Opens (creating) the SQLite call store at `path`; `writer` names this process's
    /// rollup rows (node id and start time).
    pub async fn open_sqlite(path: &Path, writer: String) -> Result<CallStore> {
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A crash may lose the last second of calls, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await?;
        }
        Ok(CallStore { pool, writer })
    }

    /// Writes a batch of calls in one transaction.
    pub async fn insert(&self, calls: &[Call]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Many rows per statement: each statement is a round trip to SQLite's worker
        // thread, which costs more than the rows.
        for chunk in calls.chunks(ROWS_PER_INSERT) {
            let sql = insert_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for c in chunk {
                let ai = c.ai.as_ref().and_then(|a| serde_json::to_string(a).ok());
                q = q
                    .bind(c.ts_ms)
                    .bind(c.request_id.as_str())
                    .bind(c.trace_id.as_deref())
                    .bind(blob(id_of(&c.route)))
                    .bind(name_of(&c.route))
                    .bind(blob(id_of(&c.service)))
                    .bind(name_of(&c.service))
                    .bind(blob(id_of(&c.consumer)))
                    .bind(name_of(&c.consumer))
                    .bind(c.client_ip.to_string())
                    .bind(c.method.as_str())
                    .bind(c.host.as_deref())
                    .bind(c.path.as_str())
                    .bind(i64::from(c.status))
                    .bind(c.total_us as i64)
                    .bind(c.upstream_us.map(|u| u as i64))
                    .bind(c.bytes_in.map(|u| u as i64))
                    .bind(c.bytes_out as i64)
                    .bind(c.upstream.as_ref().map(|(h, p)| format!("{h}:{p}")))
                    .bind(i64::from(c.retries))
                    .bind(c.error.as_deref())
                    .bind(c.complete)
                    .bind(ai);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes rollup rows (each replaces this writer's row of the same key).
    pub async fn write_rollups(&self, rows: &[(Key, Agg)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (k, a) in rows {
            let sketch =
                serde_json::to_string(&a.latency).map_err(|e| StoreError::Sketch(e.to_string()))?;
            sqlx::query(
                "INSERT INTO rollups (res, bucket, writer, service_id, route_id, consumer_id, service, route, consumer,
                    requests, s4xx, s5xx, bytes_in, bytes_out, tokens_in, tokens_out, cost_micros, latency)
                 VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                 ON CONFLICT (res, bucket, writer, service_id, route_id, consumer_id) DO UPDATE SET
                    service = excluded.service, route = excluded.route, consumer = excluded.consumer,
                    requests = excluded.requests, s4xx = excluded.s4xx, s5xx = excluded.s5xx,
                    bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out,
                    tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out,
                    cost_micros = excluded.cost_micros, latency = excluded.latency",
            )
            .bind(k.res.code())
            .bind(k.bucket)
            .bind(&self.writer)
            .bind(k.service.as_bytes().to_vec())
            .bind(k.route.as_bytes().to_vec())
            .bind(k.consumer.as_bytes().to_vec())
            .bind(a.service_name.as_deref())
            .bind(a.route_name.as_deref())
            .bind(a.consumer_name.as_deref())
            .bind(a.requests as i64)
            .bind(a.s4xx as i64)
            .bind(a.s5xx as i64)
            .bind(a.bytes_in as i64)
            .bind(a.bytes_out as i64)
            .bind(a.tokens_in as i64)
            .bind(a.tokens_out as i64)
            .bind(a.cost_micros as i64)
            .bind(sketch)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A page of calls, newest first.
    pub async fn search(&self, f: &Filter) -> Result<Page> {
        let mut sql = format!("SELECT rowid, {CALL_COLUMNS} FROM calls WHERE ts >= ? AND ts < ?");
        let mut binds: Vec<Bind> = vec![Bind::I(f.from), Bind::I(f.to)];
        if let Some(c) = &f.cursor {
            sql.push_str(" AND (ts < ? OR (ts = ? AND rowid < ?))");
            binds.extend([Bind::I(c.ts), Bind::I(c.ts), Bind::I(c.rowid)]);
        }
        for (col, name_col, v) in [
            ("service_id", "service", &f.service),
            ("route_id", "route", &f.route),
            ("consumer_id", "consumer", &f.consumer),
        ] {
            match v {
                Some(crate::query::Ref::Id(id)) => {
                    sql.push_str(&format!(" AND {col} = ?"));
                    binds.push(Bind::B(id.as_bytes().to_vec()));
                }
                Some(crate::query::Ref::Name(n)) => {
                    sql.push_str(&format!(" AND {name_col} = ?"));
                    binds.push(Bind::S(n.clone()));
                }
                None => {}
            }
        }
        if let Some((lo, hi)) = f.status {
            sql.push_str(" AND status >= ? AND status <= ?");
            binds.extend([Bind::I(i64::from(lo)), Bind::I(i64::from(hi))]);
        }
        if let Some(ms) = f.min_latency_ms {
            sql.push_str(" AND total_us >= ?");
            binds.push(Bind::I((ms * 1000.0) as i64));
        }
        if let Some(r) = &f.request_id {
            sql.push_str(" AND request_id = ?");
            binds.push(Bind::S(r.clone()));
        }
        if let Some(m) = &f.method {
            sql.push_str(" AND method = ?");
            binds.push(Bind::S(m.clone()));
        }
        if let Some(q) = &f.q {
            sql.push_str(" AND path LIKE ? ESCAPE '\\'");
            let escaped = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            binds.push(Bind::S(format!("%{escaped}%")));
        }
        sql.push_str(" ORDER BY ts DESC, rowid DESC LIMIT ?");
        binds.push(Bind::I(f.size as i64 + 1));
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                Bind::I(i) => query.bind(i),
                Bind::S(s) => query.bind(s),
                Bind::B(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut data = Vec::with_capacity(rows.len().min(f.size));
        let mut next = None;
        for (i, row) in rows.iter().enumerate() {
            if i == f.size {
                let last = &rows[i - 1];
                next = Some(Cursor {
                    ts: last.try_get("ts")?,
                    rowid: last.try_get("rowid")?,
                });
                break;
            }
            data.push(call_of(row)?);
        }
        Ok(Page { data, next })
    }

    /// The calls with `request_id` (one, unless a client reused an id), newest first.
    pub async fn by_request_id(&self, request_id: &str) -> Result<Vec<Call>> {
        let rows = sqlx::query(&format!(
            "SELECT rowid, {CALL_COLUMNS} FROM calls WHERE request_id = ? ORDER BY ts DESC LIMIT 10"
        ))
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(call_of).collect()
    }

    /// Rollup rows of a query, as (bucket, dims, agg).
    async fn rollup_rows(
        &self,
        res: Resolution,
        from: i64,
        to: i64,
        dims: &crate::query::Dims,
    ) -> Result<Vec<(i64, [Uuid; 3], Agg)>> {
        let mut sql = String::from(
            "SELECT bucket, service_id, route_id, consumer_id, service, route, consumer, requests, s4xx, s5xx,
                bytes_in, bytes_out, tokens_in, tokens_out, cost_micros, latency
             FROM rollups WHERE res = ? AND bucket >= ? AND bucket < ?",
        );
        let mut ids = Vec::new();
        for (col, v) in [
            ("service_id", dims.service),
            ("route_id", dims.route),
            ("consumer_id", dims.consumer),
        ] {
            if let Some(id) = v {
                sql.push_str(&format!(" AND {col} = ?"));
                ids.push(id);
            }
        }
        let mut q = sqlx::query(&sql).bind(res.code()).bind(from).bind(to);
        for id in ids {
            q = q.bind(id.as_bytes().to_vec());
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let uuid = |c: &str| -> Result<Uuid> {
                let b: Vec<u8> = r.try_get(c)?;
                Ok(Uuid::from_slice(&b).unwrap_or_default())
            };
            let latency: String = r.try_get("latency")?;
            let n = |c: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
            let agg = Agg {
                service_name: r.try_get("service")?,
                route_name: r.try_get("route")?,
                consumer_name: r.try_get("consumer")?,
                requests: n("requests")?,
                s4xx: n("s4xx")?,
                s5xx: n("s5xx")?,
                bytes_in: n("bytes_in")?,
                bytes_out: n("bytes_out")?,
                tokens_in: n("tokens_in")?,
                tokens_out: n("tokens_out")?,
                cost_micros: n("cost_micros")?,
                latency: serde_json::from_str(&latency)
                    .map_err(|e| StoreError::Sketch(e.to_string()))?,
                dirty: false,
            };
            out.push((
                r.try_get("bucket")?,
                [uuid("service_id")?, uuid("route_id")?, uuid("consumer_id")?],
                agg,
            ));
        }
        Ok(out)
    }

    /// A time series: one point per bucket that has calls, its sketches merged over every
    /// row (routes, consumers, nodes) the filter keeps.
    pub async fn timeseries(&self, q: &SeriesQuery) -> Result<Vec<Bucket>> {
        let rows = self.rollup_rows(q.res, q.from, q.to, &q.dims).await?;
        let mut by_bucket: std::collections::BTreeMap<i64, Agg> = std::collections::BTreeMap::new();
        for (bucket, _, agg) in rows {
            by_bucket.entry(bucket).or_default().merge(&agg);
        }
        Ok(by_bucket
            .into_iter()
            .map(|(b, a)| Bucket::of(b, &a))
            .collect())
    }

    /// The top `n` services, routes or consumers of a range by requests (or, for
    /// `error_routes`, by 4xx + 5xx answers), with their latency percentiles.
    pub async fn top(&self, q: &TopQuery) -> Result<Vec<Top>> {
        let rows = self.rollup_rows(q.res, q.from, q.to, &q.dims).await?;
        let idx = match q.by {
            TopBy::Services => 0,
            TopBy::Routes | TopBy::ErrorRoutes => 1,
            TopBy::Consumers => 2,
        };
        let mut groups: std::collections::HashMap<Uuid, Agg> = std::collections::HashMap::new();
        for (_, dims, agg) in rows {
            let g = groups.entry(dims[idx]).or_insert_with(|| Agg {
                service_name: agg.service_name.clone(),
                route_name: agg.route_name.clone(),
                consumer_name: agg.consumer_name.clone(),
                ..Agg::default()
            });
            g.merge(&agg);
        }
        let mut list: Vec<(Uuid, Agg)> = groups.into_iter().collect();
        let score = |a: &Agg| match q.by {
            TopBy::ErrorRoutes => a.s4xx + a.s5xx,
            _ => a.requests,
        };
        list.retain(|(_, a)| score(a) > 0);
        list.sort_by(|a, b| score(&b.1).cmp(&score(&a.1)).then(a.0.cmp(&b.0)));
        list.truncate(q.n);
        Ok(list
            .into_iter()
            .map(|(id, a)| {
                let name = match idx {
                    0 => a.service_name.clone(),
                    1 => a.route_name.clone(),
                    _ => a.consumer_name.clone(),
                };
                Top::of(id, name, &a)
            })
            .collect())
    }

    /// Each consumer's use of each service over a range.
    pub async fn usage(&self, q: &SeriesQuery) -> Result<Vec<Usage>> {
        let rows = self.rollup_rows(q.res, q.from, q.to, &q.dims).await?;
        let mut groups: std::collections::BTreeMap<(Uuid, Uuid), Agg> =
            std::collections::BTreeMap::new();
        for (_, dims, agg) in rows {
            let g = groups.entry((dims[2], dims[0])).or_insert_with(|| Agg {
                service_name: agg.service_name.clone(),
                consumer_name: agg.consumer_name.clone(),
                ..Agg::default()
            });
            g.merge(&agg);
        }
        Ok(groups
            .into_iter()
            .map(|((consumer, service), a)| Usage::of(consumer, service, &a))
            .collect())
    }

    /// The retention settings (defaults for those never set).
    pub async fn retention(&self) -> Result<Retention> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = 'retention'")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .and_then(|r| r.try_get::<String, _>("value").ok())
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    /// Stores new retention settings.
    pub async fn set_retention(&self, r: &Retention) -> Result<()> {
        let v = serde_json::to_string(r).map_err(|e| StoreError::Sketch(e.to_string()))?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ('retention', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(v)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes one batch of what retention lets go (raw calls first, then rollups,
    /// finest first); the number of rows deleted (0: nothing left to delete).
    pub async fn prune_batch(&self, now_ms: i64, r: &Retention) -> Result<u64> {
        let day = 86_400_000_i64;
        let raw = sqlx::query(
            "DELETE FROM calls WHERE rowid IN (SELECT rowid FROM calls WHERE ts < ? ORDER BY ts LIMIT ?)",
        )
        .bind(now_ms - i64::from(r.raw_days) * day)
        .bind(PRUNE_BATCH)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if raw > 0 {
            return Ok(raw);
        }
        for (res, days) in [
            (Resolution::Minute, r.minute_days),
            (Resolution::Hour, r.hour_days),
            (Resolution::Day, r.day_days),
        ] {
            let n = sqlx::query(
                "DELETE FROM rollups WHERE rowid IN (SELECT rowid FROM rollups WHERE res = ? AND bucket < ? LIMIT ?)",
            )
            .bind(res.code())
            .bind(now_ms - i64::from(days) * day)
            .bind(PRUNE_BATCH)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if n > 0 {
                return Ok(n);
            }
        }
        Ok(0)
    }

    /// Rows stored (raw calls, rollup rows).
    pub async fn counts(&self) -> Result<(i64, i64)> {
        let c: i64 = sqlx::query("SELECT COUNT(*) AS n FROM calls")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let r: i64 = sqlx::query("SELECT COUNT(*) AS n FROM rollups")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok((c, r))
    }
}

enum Bind {
    I(i64),
    S(String),
    B(Vec<u8>),
}

fn call_of(r: &sqlx::sqlite::SqliteRow) -> Result<Call> {
    let named = |id: &str, name: &str| -> Result<Option<(Uuid, Option<std::sync::Arc<str>>)>> {
        let b: Option<Vec<u8>> = r.try_get(id)?;
        let n: Option<String> = r.try_get(name)?;
        Ok(b.and_then(|b| Uuid::from_slice(&b).ok())
            .map(|u| (u, n.map(std::sync::Arc::from))))
    };
    let upstream: Option<String> = r.try_get("upstream")?;
    let ai: Option<String> = r.try_get("ai")?;
    Ok(Call {
        ts_ms: r.try_get("ts")?,
        request_id: r.try_get("request_id")?,
        trace_id: r.try_get("trace_id")?,
        route: named("route_id", "route")?,
        service: named("service_id", "service")?,
        consumer: named("consumer_id", "consumer")?,
        client_ip: r
            .try_get::<String, _>("client_ip")?
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        method: r.try_get("method")?,
        host: r.try_get("host")?,
        path: r.try_get("path")?,
        status: r.try_get::<i64, _>("status")? as u16,
        total_us: r.try_get::<i64, _>("total_us")?.max(0) as u64,
        upstream_us: r
            .try_get::<Option<i64>, _>("upstream_us")?
            .map(|u| u.max(0) as u64),
        bytes_in: r
            .try_get::<Option<i64>, _>("bytes_in")?
            .map(|u| u.max(0) as u64),
        bytes_out: r.try_get::<i64, _>("bytes_out")?.max(0) as u64,
        upstream: upstream.and_then(|u| {
            let (h, p) = u.rsplit_once(':')?;
            Some((std::sync::Arc::from(h), p.parse().ok()?))
        }),
        retries: r.try_get::<i64, _>("retries")?.max(0) as u32,
        error: r
            .try_get::<Option<String>, _>("error")?
            .map(std::sync::Arc::from),
        complete: r.try_get("complete")?,
        ai: ai
            .and_then(|a| serde_json::from_str::<AiPartRow>(&a).ok())
            .map(AiPart::from),
    })
}

/// The stored form of [`AiPart`].
#[derive(serde::Deserialize)]
struct AiPartRow {
    provider: String,
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
    #[serde(default)]
    estimated: bool,
}

impl From<AiPartRow> for AiPart {
    fn from(r: AiPartRow) -> AiPart {
        AiPart {
            provider: r.provider,
            model: r.model,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_micros: r.cost_micros,
            estimated: r.estimated,
        }
    }
}
