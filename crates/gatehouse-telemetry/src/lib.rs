//! Gatehouse's call log: every request's record, searchable, with analytics that never scan
//! raw rows.
//!
//! - [`call`]: the record ([`Call`]).
//! - [`pipeline`]: the bounded queue from the request path and the writer task
//!   ([`CallLog`]); a full queue drops and counts, never blocks a request.
//! - [`store`]: the SQLite call store (its own file): raw calls, rollups, settings.
//! - [`rollup`]: minute/hour/day rollups per service, route and consumer with mergeable
//!   latency sketches (DDSketch, 1 % relative accuracy).
//! - [`query`]: search filters, cursors, analytics queries and answers, retention settings.

pub mod call;
pub mod pipeline;
pub mod query;
pub mod rollup;
pub mod store;

pub use call::{AiPart, Call};
pub use pipeline::CallLog;
pub use store::CallStore;
